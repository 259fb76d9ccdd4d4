namespace OrleansPush.Gateway.Observability;

/// <summary>Log format (<c>OrleansPush:Logging</c>).</summary>
public sealed class LogFormatOptions
{
    public const string Section = "OrleansPush:Logging";
    public const bool DefaultJson = false;

    /// <summary>True: console logs are one JSON object per line (<c>AddJsonConsole</c>), for log shippers.</summary>
    public bool Json { get; set; } = DefaultJson;
}

/// <summary>Metrics, the Prometheus scrape endpoint, JSON console logs and the admin API.</summary>
public static class ObservabilityHosting
{
    /// <summary>The Prometheus scrape path.</summary>
    public const string MetricsPath = "/metrics";

    public static WebApplicationBuilder AddOrleansPushObservability(this WebApplicationBuilder builder)
    {
        // Read here rather than through IOptions: the log format has to be chosen before the container exists.
        // A value that is not a boolean stops the start with an error naming OrleansPush:Logging:Json.
        var format = builder.Configuration.GetSection(LogFormatOptions.Section).Get<LogFormatOptions>() ?? new LogFormatOptions();
        if (format.Json)
        {
            builder.Logging.AddJsonConsole(o => o.UseUtcTimestamp = true);
        }

        builder.Services.AddOptions<LogFormatOptions>().Bind(builder.Configuration.GetSection(LogFormatOptions.Section)).ValidateOnStart();
        builder.Services.AddSingleton<PrometheusScrape>();
        return builder;
    }

    public static WebApplication MapOrleansPushObservability(this WebApplication app)
    {
        // Started with the app, so counters and gauges count from the first connection on.
        var scrape = app.Services.GetRequiredService<PrometheusScrape>();
        app.MapGet(MetricsPath, () => Results.Text(scrape.Render(), "text/plain; version=0.0.4; charset=utf-8"));
        app.MapAdminApi();
        return app;
    }
}

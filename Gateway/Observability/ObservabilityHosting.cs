using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;

namespace OrleansPush.Gateway.Observability;

/// <summary>Log format (<c>OrleansPush:Logging</c>).</summary>
public sealed class LogFormatOptions
{
    public const string Section = "OrleansPush:Logging";
    public const bool DefaultJson = false;

    /// <summary>True: console logs are one JSON object per line (<c>AddJsonConsole</c>), for log shippers.</summary>
    public bool Json { get; set; } = DefaultJson;
}

/// <summary>Metrics (the OpenTelemetry SDK and its Prometheus exporter), JSON console logs and the admin API.</summary>
public static class ObservabilityHosting
{
    /// <summary>The Prometheus scrape path.</summary>
    public const string MetricsPath = "/metrics";

    /// <summary>The <c>service.name</c> the scrape's <c>target_info</c> carries.</summary>
    public const string ServiceName = "orleanspush-gateway";

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

        // The meter provider starts with the host, so counters and gauges count from the first connection on.
        // System.Runtime is the runtime's built-in meter (GC, thread pool, exceptions): apart from the exception count,
        // its instruments are observable and cost nothing until a scrape reads them.
        builder.Services.AddOpenTelemetry()
            .ConfigureResource(resource => resource.AddService(ServiceName))
            .WithMetrics(metrics => metrics
                .AddMeter(GatewayMetrics.MeterName, "System.Runtime")
                // No response cache: collecting a few dozen series is cheap, and each scrape then shows the counts as they are.
                .AddPrometheusExporter(o => o.ScrapeResponseCacheDurationMilliseconds = 0));
        return builder;
    }

    public static WebApplication MapOrleansPushObservability(this WebApplication app)
    {
        app.MapPrometheusScrapingEndpoint(MetricsPath);
        app.MapAdminApi();
        return app;
    }
}

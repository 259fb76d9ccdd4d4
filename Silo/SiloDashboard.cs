using System.Net;
using Microsoft.AspNetCore.Authentication;
using Microsoft.Extensions.Options;
using Orleans.Dashboard;

namespace OrleansPush.Silo;

/// <summary>The silo's optional HTTP side (<see cref="SiloDashboardOptions"/>): the Orleans dashboard at
/// <c>/dashboard/</c> behind HTTP Basic, and an anonymous <c>/healthz</c>. Without a dashboard port none of it exists:
/// the silo is a generic host without Kestrel, as it always was.</summary>
public static class SiloDashboard
{
    /// <summary>A web application builder when <c>OrleansPush:Dashboard:Port</c> is set, else a generic host builder.</summary>
    public static IHostApplicationBuilder CreateBuilder(string[] args)
    {
        // The generic builder reads the same configuration sources (appsettings, environment, command line) as the
        // web one would; it is dropped only when the dashboard asks for a web host.
        var generic = Host.CreateApplicationBuilder(args);
        if (generic.Configuration.GetValue<int>($"{SiloDashboardOptions.Section}:Port") <= 0)
        {
            return generic;
        }

        generic.Configuration.Dispose();
        return WebApplication.CreateBuilder(args);
    }

    /// <summary>The dashboard's services, Kestrel's endpoint and Basic authentication; nothing on a generic host.</summary>
    public static IHostApplicationBuilder AddOrleansPushDashboard(this IHostApplicationBuilder builder)
    {
        if (builder is not WebApplicationBuilder web)
        {
            return builder;
        }

        var section = web.Configuration.GetSection(SiloDashboardOptions.Section);
        var options = section.Get<SiloDashboardOptions>() ?? new SiloDashboardOptions();
        // Validated now rather than on start: Kestrel's endpoint is built from these values, and no port opens with
        // a dashboard that lacks credentials.
        var validation = new SiloDashboardOptionsValidator().Validate(Options.DefaultName, options);
        if (validation.Failed)
        {
            throw new OptionsValidationException(Options.DefaultName, typeof(SiloDashboardOptions), validation.Failures);
        }

        web.Services.AddSingleton(Options.Create(options));
        // The dashboard's endpoint is the only one. The ports of ASPNETCORE_HTTP_PORTS (the aspnet base image sets 8080)
        // are cleared, so that Kestrel does not warn that it overrides them; explicit ASPNETCORE_URLS still warn.
        web.WebHost.UseSetting(WebHostDefaults.HttpPortsKey, "")
            .UseSetting(WebHostDefaults.HttpsPortsKey, "")
            .ConfigureKestrel(kestrel => kestrel.Listen(IPAddress.Parse(options.BindAddress), options.Port));
        web.UseOrleans(silo => silo.AddDashboard());
        web.Services.AddAuthentication(BasicAuthenticationHandler.SchemeName)
            .AddScheme<AuthenticationSchemeOptions, BasicAuthenticationHandler>(BasicAuthenticationHandler.SchemeName, null);
        web.Services.AddAuthorization();
        return builder;
    }

    /// <summary>Builds the host; on a web host also maps <c>/healthz</c> and the dashboard, which requires a user.</summary>
    public static IHost BuildSilo(this IHostApplicationBuilder builder)
    {
        if (builder is HostApplicationBuilder generic)
        {
            return generic.Build();
        }

        var app = ((WebApplicationBuilder)builder).Build();
        app.UseAuthentication();
        app.UseAuthorization();
        app.MapGet("/healthz", () => Results.Ok(new { status = "live" }));
        app.MapOrleansDashboard(SiloDashboardOptions.RoutePrefix).RequireAuthorization();
        return app;
    }
}

using Microsoft.AspNetCore.SignalR;
using Microsoft.Extensions.Options;
using OrleansPush.Gateway.Connections;
using OrleansPush.Gateway.Observability;
using OrleansPush.Gateway.Proxies;
using OrleansPush.Gateway.Publishing;
using OrleansPush.Gateway.Routing;
using OrleansPush.Gateway.Security;
using OrleansPush.Gateway.Transports.Http;
using OrleansPush.Gateway.Transports.Mqtt;
using OrleansPush.Gateway.Transports.SignalR;
using OrleansPush.Gateway.Transports.WebSockets;
using OrleansPush.Hosting;

namespace OrleansPush.Gateway.Hosting;

/// <summary>The gateway's wiring, so that <c>Program.cs</c> (and the tests, which run the same app on real Kestrel)
/// read as a table of contents.</summary>
public static class GatewayHosting
{
    /// <summary>Joins the cluster as an Orleans client: localhost clustering (embedded and <c>Localhost</c> modes) or,
    /// in <c>Cluster</c> mode, the configured membership table; and the push stream provider.</summary>
    public static WebApplicationBuilder AddOrleansPushClient(this WebApplicationBuilder builder)
    {
        var cluster = SharedOptions.ReadCluster(builder.Configuration);
        var streams = SharedOptions.ReadStreams(builder.Configuration);
        builder.UseOrleansClient(client =>
        {
            client.UsePushClustering(cluster, builder.Configuration);
            client.Configure<Orleans.Configuration.ClientMessagingOptions>(o => o.ResponseTimeout = cluster.ResponseTimeout);
            client.AddPushStreams(streams, cluster.ResponseTimeout);
        });
        return builder;
    }

    public static WebApplicationBuilder AddOrleansPushGateway(this WebApplicationBuilder builder)
    {
        var services = builder.Services;
        services.AddOptions<GatewayOptions>().Bind(builder.Configuration.GetSection(GatewayOptions.Section)).ValidateOnStart();
        services.AddSingleton<IValidateOptions<GatewayOptions>, GatewayOptionsValidator>();
        services.AddSharedOptions(builder.Configuration);
        services.AddSingleton(TimeProvider.System);

        services.AddOptions<DrainOptions>().Bind(builder.Configuration.GetSection(DrainOptions.Section)).ValidateOnStart();
        services.AddSingleton<IValidateOptions<DrainOptions>, DrainOptionsValidator>();
        services.AddSingleton<ConnectionDrain>();
        services.AddSingleton<Readiness>();
        services.AddHostedService<DrainOnStop>();
        services.AddSingleton<GatewayIdentity>();
        services.AddSingleton<Identity>();
        services.AddSingleton<TopicRouter>();
        services.AddSingleton<UserConnections>();
        services.AddSingleton<TopicDirectory>();
        services.AddSingleton<Publisher>();
        services.AddSingleton<ConnectionCommands>();
        services.AddSingleton<PushEndpoints>();
        services.AddSingleton<ConnectionDoor>();
        services.AddBackendProxies(builder.Configuration);
        services.AddSingleton<WebSocketEndpoint>();
        services.AddSingleton<WebSocketKeepAlive>();
        services.AddSingleton<SignalRConnections>();
        services.AddHostedService<GatewayStream>();
        services.AddSseAndLongPolling(builder.Configuration);
        services.AddMqttTransport(builder.Configuration);

        services.AddSignalR(o => { o.MaximumReceiveMessageSize = builder.Configuration.GetValue($"{GatewayOptions.Section}:MaxMessageBytes", GatewayOptions.DefaultMaxMessageBytes); })
            .AddMessagePackProtocol();
        services.AddSingleton<HubLifetimeManager<PushHub>, PushHubLifetimeManager>();
        builder.AddOrleansPushSecurity();
        builder.AddOrleansPushObservability();
        return builder;
    }

    public static WebApplication MapOrleansPush(this WebApplication app)
    {
        app.Logger.LogDebug("Mapping OrleansPush endpoints");
        app.UseDefaultFiles();
        app.UseStaticFiles();
        app.UseOrleansPushSecurity();
        var keepAlive = app.Services.GetRequiredService<WebSocketKeepAlive>();
        app.Use((context, next) =>
        {
            if (context.Request.Path == WebSocketEndpoint.Path)
            {
                keepAlive.Attach(context);
            }

            return next(context);
        });
        app.UseWebSockets();
        app.Map(WebSocketEndpoint.Path, (HttpContext context, WebSocketEndpoint endpoint) => endpoint.HandleAsync(context));
        app.MapsPush(new PushEndpoint(WebSocketEndpoint.Path, "ws"));
        app.MapHub<PushHub>(PushHub.Path);
        app.MapsPush(new PushEndpoint(PushHub.Path, "signalr", FollowUpRequests: true));
        app.MapSseAndLongPolling();
        app.MapMqttTransport();
        app.MapPublishApi();
        app.MapGet("/healthz", () => Results.Ok(new { status = "live" }));
        app.MapGet("/readyz", (Readiness readiness, CancellationToken cancellationToken) => readiness.CheckAsync(cancellationToken));
        app.MapOrleansPushObservability();
        return app;
    }
}

/// <summary>A running gateway: the web app, and the embedded silo when there is one.</summary>
public sealed class GatewayHost : IAsyncDisposable
{
    private GatewayHost(WebApplication app, EmbeddedSilo? silo)
    {
        App = app;
        Silo = silo;
    }

    public WebApplication App { get; }

    public EmbeddedSilo? Silo { get; }

    /// <summary>Builds the gateway; in the embedded default, starts its silo first.</summary>
    public static async Task<GatewayHost> CreateAsync(string[] args, Action<WebApplicationBuilder>? configure = null)
    {
        var builder = WebApplication.CreateBuilder(args);
        configure?.Invoke(builder);
        SettingsCatalog.ThrowIfUnknown(builder.Configuration);
        // The drain runs inside the host's stop: the shutdown timeout covers it (and Kubernetes' grace period this).
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout =
            (builder.Configuration.GetSection(DrainOptions.Section).Get<DrainOptions>() ?? new DrainOptions()).ShutdownTimeout);
        builder.AddOrleansPushClient().AddOrleansPushGateway();

        var cluster = SharedOptions.ReadCluster(builder.Configuration);
        var silo = cluster.Mode == ClusterMode.Embedded ? await EmbeddedSilo.StartAsync(builder.Configuration) : null;
        var app = builder.Build();
        app.MapOrleansPush();
        return new GatewayHost(app, silo);
    }

    public async ValueTask DisposeAsync()
    {
        await App.DisposeAsync();
        if (Silo is not null)
        {
            await Silo.DisposeAsync();
        }
    }
}

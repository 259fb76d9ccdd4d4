using Microsoft.Extensions.Options;
using OrleansPush.Gateway.Connections;
using OrleansPush.Gateway.Transports.LongPolling;
using OrleansPush.Gateway.Transports.Sse;

namespace OrleansPush.Gateway.Transports.Http;

/// <summary>Wiring of the plain-HTTP transports: Server-Sent Events (<c>GET /sse</c>) and long polling (<c>GET /poll</c>).</summary>
public static class HttpStreamingHosting
{
    public static IServiceCollection AddSseAndLongPolling(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<SseOptions>().Bind(configuration.GetSection(SseOptions.Section)).ValidateOnStart();
        services.AddSingleton<IValidateOptions<SseOptions>, SseOptionsValidator>();
        services.AddOptions<LongPollingOptions>().Bind(configuration.GetSection(LongPollingOptions.Section)).ValidateOnStart();
        services.AddSingleton<IValidateOptions<LongPollingOptions>, LongPollingOptionsValidator>();
        services.AddSingleton<SseEndpoint>();
        services.AddSingleton<LongPollingEndpoint>();
        return services;
    }

    public static IEndpointRouteBuilder MapSseAndLongPolling(this IEndpointRouteBuilder app)
    {
        app.MapGet(SseEndpoint.Path, (HttpContext context, SseEndpoint endpoint) => endpoint.HandleAsync(context));
        app.MapsPush(new PushEndpoint(SseEndpoint.Path, "sse"));
        app.MapGet(LongPollingEndpoint.Path, (HttpContext context, LongPollingEndpoint endpoint) => endpoint.HandleAsync(context));
        app.MapsPush(new PushEndpoint(LongPollingEndpoint.Path, "poll"));
        return app;
    }
}

using Microsoft.Extensions.Options;

namespace OrleansPush.Gateway.Proxies;

/// <summary>The backend's proxies (<c>OrleansPush:Proxy</c>): each is off until its <c>Url</c> is set.</summary>
public sealed class ProxyOptions
{
    public const string Section = "OrleansPush:Proxy";

    /// <summary>Asked at the door for a connection that carries no token (e.g. a session cookie); in open mode, for
    /// every connection.</summary>
    public ConnectProxyOptions Connect { get; set; } = new();

    /// <summary>Asked for a subscribe the connection's patterns do not cover.</summary>
    public ProxyEndpointOptions Subscribe { get; set; } = new();

    /// <summary>Asked for each client publish; may refuse it or replace its payload.</summary>
    public ProxyEndpointOptions Publish { get; set; } = new();
}

public class ProxyEndpointOptions
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(3);

    /// <summary>The backend's <c>http</c> or <c>https</c> URL; unset turns this proxy off.</summary>
    public Uri? Url { get; set; }

    /// <summary>How long the gateway waits for the answer; past it the client gets <c>unavailable</c>.</summary>
    public TimeSpan Timeout { get; set; } = DefaultTimeout;
}

public sealed class ConnectProxyOptions : ProxyEndpointOptions
{
    public const int MaxHeaders = 32;

    /// <summary>Names of HTTP request headers (any case) the connect proxy gets as <c>"headers"</c> when a connection's
    /// request carries them (raw WebSocket, SSE, long polling, SignalR, MQTT over WebSocket): e.g. <c>User-Agent</c> or
    /// an application's own session header. None by default.</summary>
    public string[] Headers { get; set; } = [];
}

internal sealed class ProxyOptionsValidator : IValidateOptions<ProxyOptions>
{
    public ValidateOptionsResult Validate(string? name, ProxyOptions o)
    {
        var failures = new List<string>();
        Check(failures, "Connect", o.Connect);
        if (o.Connect.Headers.Length > ConnectProxyOptions.MaxHeaders
            || o.Connect.Headers.Any(h => h is not { Length: > 0 and <= 100 } || !h.All(c => char.IsAsciiLetterOrDigit(c) || "!#$%&'*+-.^_`|~".Contains(c))))
        {
            failures.Add($"{ProxyOptions.Section}:Connect:Headers must be at most {ConnectProxyOptions.MaxHeaders} HTTP header names.");
        }

        Check(failures, "Subscribe", o.Subscribe);
        Check(failures, "Publish", o.Publish);
        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }

    private static void Check(List<string> failures, string which, ProxyEndpointOptions endpoint)
    {
        var key = $"{ProxyOptions.Section}:{which}";
        if (endpoint.Url is { } url && (!url.IsAbsoluteUri || (url.Scheme != Uri.UriSchemeHttp && url.Scheme != Uri.UriSchemeHttps)))
        {
            failures.Add($"{key}:Url must be an absolute http or https URL.");
        }

        if (endpoint.Timeout <= TimeSpan.Zero || endpoint.Timeout > TimeSpan.FromSeconds(60))
        {
            failures.Add($"{key}:Timeout must be between 00:00:00.001 and 00:01:00.");
        }
    }
}

public static class ProxyHosting
{
    /// <summary>The proxies' options (validated at start) and their named <see cref="HttpClient"/>: one pooled handler
    /// for every proxy call; each call's own timeout bounds it.</summary>
    public static IServiceCollection AddBackendProxies(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<ProxyOptions>().Bind(configuration.GetSection(ProxyOptions.Section)).ValidateOnStart();
        services.AddSingleton<IValidateOptions<ProxyOptions>, ProxyOptionsValidator>();
        services.AddHttpClient(BackendProxies.ClientName, c => c.Timeout = Timeout.InfiniteTimeSpan);
        services.AddSingleton<BackendProxies>();
        services.AddSingleton<ProxiedConnections>();
        return services;
    }
}

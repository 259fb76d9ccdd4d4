namespace OrleansPush.Gateway.Connections;

/// <summary>A path where clients open push connections, as it was mapped.</summary>
/// <param name="Path">The mapped path (<c>/ws</c>, <c>/hubs/push</c>, the configured MQTT WebSocket path, ...).</param>
/// <param name="Transport">The transport's name, for the audit trail.</param>
/// <param name="AuthenticatesInProtocol">The client authenticates inside its own protocol (MQTT's CONNECT), so the HTTP
/// request is checked only for what a browser sends (origin) and the drain; the rest of the door runs at CONNECT.</param>
/// <param name="FollowUpRequests">Requests that carry a connection <c>id</c> belong to a connection already admitted
/// (SignalR's transports after negotiate) and are not new handshakes.</param>
public sealed record PushEndpoint(string Path, string Transport, bool AuthenticatesInProtocol = false, bool FollowUpRequests = false)
{
    /// <summary>Whether the request opens a connection (counted against the handshake rate).</summary>
    public bool IsHandshake(HttpRequest request) =>
        !FollowUpRequests || request.Path.Value!.EndsWith("/negotiate", StringComparison.OrdinalIgnoreCase) || !request.Query.ContainsKey("id");
}

/// <summary>
/// The push paths of this gateway, recorded by each transport as it maps itself (<see cref="PushEndpointMapping.MapsPush"/>), so that the
/// door, the drain and the token reader know them without a list spelled by hand: a transport mapped at a custom path
/// (<c>OrleansPush:Mqtt:WebSocketPath</c>) is guarded like the others.
/// </summary>
public sealed class PushEndpoints
{
    private readonly Lock _lock = new();
    private volatile PushEndpoint[] _all = [];

    public IReadOnlyList<PushEndpoint> All => _all;

    public void Add(PushEndpoint endpoint)
    {
        lock (_lock)
        {
            _all = [.. _all, endpoint];
        }
    }

    /// <summary>The push endpoint a request path belongs to (the path or one below it), or null.</summary>
    public PushEndpoint? Find(PathString path)
    {
        foreach (var endpoint in _all)
        {
            if (path.StartsWithSegments(endpoint.Path, StringComparison.OrdinalIgnoreCase))
            {
                return endpoint;
            }
        }

        return null;
    }
}

public static class PushEndpointMapping
{
    /// <summary>Records a push path this app just mapped (see <see cref="PushEndpoints"/>).</summary>
    public static IEndpointRouteBuilder MapsPush(this IEndpointRouteBuilder app, PushEndpoint endpoint)
    {
        app.ServiceProvider.GetRequiredService<PushEndpoints>().Add(endpoint);
        return app;
    }
}

using Microsoft.Extensions.Options;
using OrleansPush.Gateway.Hosting;

namespace OrleansPush.Gateway.Security;

/// <summary>
/// Middleware in front of every push endpoint (<c>/ws</c>, <c>/sse</c>, <c>/poll</c>, <c>/hubs/push</c>, <c>/mqtt</c>):
/// before a connection is accepted it checks, in order, the browser origin (403 <c>forbidden</c>), the gateway's
/// handshake rate (429 <c>rate_limited</c>), the token when tokens are required (401 <c>unauthorized</c>; MQTT
/// authenticates in its CONNECT packet instead), and the connections per user and per IP (429 <c>rate_limited</c>),
/// holding those two slots for as long as the request (the connection) lasts. Every refusal is audited.
/// </summary>
public sealed class ConnectionGate(
    RequestDelegate next,
    IOptions<OriginOptions> origins,
    ConnectionLimits limits,
    ConnectionSecurity security,
    Identity identity)
{
    private static readonly string[] PushPaths = ["/ws", "/sse", "/poll", "/hubs/push", MqttPath];
    private const string MqttPath = "/mqtt";
    private readonly HashSet<string> _allowedOrigins = new(origins.Value.AllowedOrigins, StringComparer.OrdinalIgnoreCase);

    public async Task InvokeAsync(HttpContext context)
    {
        var path = PushPathOf(context.Request.Path);
        if (path is null)
        {
            await next(context);
            return;
        }

        var remote = context.Connection.RemoteIpAddress?.ToString();
        var audit = security.Audit;
        if (_allowedOrigins.Count > 0 && context.Request.Headers.Origin is { Count: > 0 } origin && !_allowedOrigins.Contains(origin.ToString()))
        {
            audit.OriginRefused(Printable(origin.ToString()), path, remote);
            await Problems.WriteAsync(context, StatusCodes.Status403Forbidden, "forbidden", "This origin may not open push connections.");
            return;
        }

        if (IsHandshake(context, path) && !limits.TryHandshake())
        {
            audit.LimitExceeded("handshakes_per_second", null, path, remote);
            context.Response.Headers.RetryAfter = "1";
            await Problems.WriteAsync(context, StatusCodes.Status429TooManyRequests, "rate_limited", "Too many new connections; retry shortly.");
            return;
        }

        if (security.Secured && path != MqttPath && context.User.Identity?.IsAuthenticated != true)
        {
            var reason = context.Items.TryGetValue(TokenKeys.FailureItem, out var failure) ? (string)failure! : "missing";
            audit.TokenRefused(reason, path, remote);
            await Problems.WriteAsync(context, StatusCodes.Status401Unauthorized, "unauthorized",
                reason == "missing" ? "A token is required (Authorization: Bearer, or ?access_token=)." : $"The token was refused ({reason}).");
            return;
        }

        identity.TryGetUser(context, out var userId, out _);
        using var slot = limits.TryConnect(userId, remote, out var refusedBy);
        if (slot is null)
        {
            audit.LimitExceeded(refusedBy!, userId, path, remote);
            await Problems.WriteAsync(context, StatusCodes.Status429TooManyRequests, "rate_limited",
                refusedBy == "connections_per_user" ? "Too many connections for this user." : "Too many connections from this address.");
            return;
        }

        await next(context);
    }

    private static string? PushPathOf(PathString path)
    {
        foreach (var p in PushPaths)
        {
            if (path.StartsWithSegments(p, StringComparison.OrdinalIgnoreCase))
            {
                return p;
            }
        }

        return null;
    }

    /// <summary>A request that opens a connection, as opposed to a SignalR transport's follow-up request (those carry
    /// the connection's <c>id</c>).</summary>
    private static bool IsHandshake(HttpContext context, string path) =>
        path != "/hubs/push" || context.Request.Path.Value!.EndsWith("/negotiate", StringComparison.OrdinalIgnoreCase) || !context.Request.Query.ContainsKey("id");

    /// <summary>An origin as given, cut short and stripped of control characters, for the log.</summary>
    private static string Printable(string origin) =>
        new([.. origin.Take(200).Select(c => char.IsControl(c) ? '?' : c)]);
}

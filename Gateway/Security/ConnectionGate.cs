using OrleansPush.Gateway.Connections;
using OrleansPush.Gateway.Hosting;
using OrleansPush.Gateway.Proxies;

namespace OrleansPush.Gateway.Security;

/// <summary>
/// Middleware in front of every push path that was mapped (<see cref="PushEndpoints"/>): an HTTP request that opens or
/// carries a connection passes the <see cref="ConnectionDoor"/>, and the limit slots it takes are held for as long as the
/// request (the connection) lasts. A transport that authenticates in its own protocol (MQTT over WebSocket) is checked
/// here for origin and drain only; the rest of the door runs at its CONNECT.
/// </summary>
public sealed class ConnectionGate(RequestDelegate next, PushEndpoints endpoints, ConnectionDoor door, Identity identity)
{
    public async Task InvokeAsync(HttpContext context)
    {
        if (endpoints.Find(context.Request.Path) is not { } endpoint)
        {
            await next(context);
            return;
        }

        var remote = context.Connection.RemoteIpAddress?.ToString();
        var origin = context.Request.Headers.Origin.ToString();
        if (endpoint.AuthenticatesInProtocol)
        {
            if (door.CheckDoorstep(origin, endpoint.Path, remote) is { } early)
            {
                await RefuseAsync(context, early);
                return;
            }

            await next(context);
            return;
        }

        identity.TryGetUser(context, out var openUser, out _);
        var (admitted, refusal) = await door.AdmitAsync(new AdmissionRequest(
            endpoint.Path,
            remote,
            origin,
            endpoint.IsHandshake(context.Request),
            () => Task.FromResult(AuthenticatedBy(context)),
            door.Secured ? null : openUser,
            () => new ConnectProxyRequest(endpoint.Transport, remote, Cookies(context.Request.Cookies))));
        if (admitted is null)
        {
            await RefuseAsync(context, refusal!);
            return;
        }

        // The transports read who the connection is from here (Identity), whether a token or the connect proxy decided.
        context.Items[AdmittedItem] = admitted;
        using (admitted.Slots)
        {
            await next(context);
        }
    }

    /// <summary>The key of the request's <see cref="Admitted"/> in <see cref="HttpContext.Items"/>.</summary>
    public static readonly object AdmittedItem = new();

    private static Dictionary<string, string>? Cookies(IRequestCookieCollection cookies) =>
        cookies.Count == 0 ? null : cookies.ToDictionary(c => c.Key, c => c.Value, StringComparer.Ordinal);

    /// <summary>The bearer handler has run: its result, or the reason it refused the token.</summary>
    private static (ConnectionAccess? Access, string Reason) AuthenticatedBy(HttpContext context) =>
        context.User.Identity?.IsAuthenticated == true
            ? (ConnectionAccess.FromPrincipal(context.User), string.Empty)
            : (null, context.Items.TryGetValue(TokenKeys.FailureItem, out var failure) ? (string)failure! : TokenReasons.Missing);

    private static Task RefuseAsync(HttpContext context, DoorRefusal refusal)
    {
        if (refusal.RetrySoon)
        {
            context.Response.Headers.RetryAfter = "1";
        }

        return Problems.WriteAsync(context, refusal.Status, refusal.Code, refusal.Message);
    }
}

using System.Text.Json;
using OrleansPush.Gateway.Connections;
using OrleansPush.Gateway.Hosting;
using OrleansPush.Gateway.Proxies;

namespace OrleansPush.Gateway.Security;

/// <summary>
/// Middleware in front of every push path that was mapped (<see cref="PushEndpoints"/>): an HTTP request that opens or
/// carries a connection passes the <see cref="ConnectionDoor"/>, and the limit slots it takes are held for as long as the
/// request (the connection) lasts. A transport that authenticates in its own protocol (MQTT over WebSocket) is checked
/// here for origin and drain only; the rest of the door runs at its CONNECT.
/// <para>A SignalR connection is many requests (negotiate, then its transport's, each poll and send of long polling):
/// the connect proxy's answer for it is kept by its connection token (<see cref="ProxiedConnections"/>) so the backend
/// is asked once per connection, not once per request.</para>
/// </summary>
public sealed class ConnectionGate(RequestDelegate next, PushEndpoints endpoints, ConnectionDoor door, Identity identity,
    BackendProxies proxies, ProxiedConnections proxied)
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
        var handshake = endpoint.IsHandshake(context.Request);
        var connectionToken = endpoint.FollowUpRequests && !handshake ? context.Request.Query["id"].ToString() : null;
        var (admitted, refusal) = await door.AdmitAsync(new AdmissionRequest(
            endpoint.Path,
            remote,
            origin,
            handshake,
            () => Task.FromResult(AuthenticatedBy(context)),
            door.Secured ? null : openUser,
            () => proxies.RequestOf(endpoint.Transport, remote, context.Request),
            connectionToken is null ? null : proxied.Find(connectionToken)));
        if (admitted is null)
        {
            await RefuseAsync(context, refusal!);
            return;
        }

        // The transports read who the connection is from here (Identity), whether a token or the connect proxy decided.
        context.Items[AdmittedItem] = admitted;
        using (admitted.Slots)
        {
            if (!admitted.Access.FromConnectProxy || !endpoint.FollowUpRequests)
            {
                await next(context);
            }
            else if (connectionToken is not null)
            {
                proxied.Remember(connectionToken, admitted.Access);
                await next(context);
            }
            else if (context.Request.Path.Value!.EndsWith("/negotiate", StringComparison.OrdinalIgnoreCase))
            {
                await NegotiateAsync(context, admitted.Access);
            }
            else
            {
                await next(context);
            }
        }
    }

    /// <summary>SignalR's negotiate answers with the connection token that each later request of the connection carries
    /// as <c>id</c>: it is read on the way out, so that those requests hold this answer instead of asking again. The
    /// answer is a small JSON object (SignalR's negotiate protocol), buffered whole.</summary>
    private async Task NegotiateAsync(HttpContext context, ConnectionAccess access)
    {
        var body = context.Response.Body;
        using var buffer = new MemoryStream();
        context.Response.Body = buffer;
        try
        {
            await next(context);
        }
        finally
        {
            context.Response.Body = body;
        }

        if (context.Response.StatusCode == StatusCodes.Status200OK && ConnectionTokenOf(buffer) is { Length: > 0 } token)
        {
            proxied.Remember(token, access);
        }

        buffer.Position = 0;
        await buffer.CopyToAsync(body, context.RequestAborted);
    }

    /// <summary>The <c>connectionToken</c> of a negotiate answer (<c>connectionId</c> in its version 0), or null.</summary>
    private static string? ConnectionTokenOf(MemoryStream negotiated)
    {
        try
        {
            var root = JsonDocument.Parse(negotiated.GetBuffer().AsMemory(0, (int)negotiated.Length)).RootElement;
            return root.ValueKind == JsonValueKind.Object
                && (root.TryGetProperty("connectionToken", out var token) || root.TryGetProperty("connectionId", out token))
                && token.ValueKind == JsonValueKind.String ? token.GetString() : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>The key of the request's <see cref="Admitted"/> in <see cref="HttpContext.Items"/>.</summary>
    public static readonly object AdmittedItem = new();

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

using Microsoft.Extensions.Options;
using OrleansPush.Gateway.Hosting;
using OrleansPush.Gateway.Proxies;
using OrleansPush.Gateway.Security;

namespace OrleansPush.Gateway.Connections;

/// <summary>Why the door refused a connection: the protocol's code, a message for the client, the HTTP status an HTTP
/// transport answers with, and whether the client should wait a second before it tries again.</summary>
public sealed record DoorRefusal(string Code, string Message, int Status, bool RetrySoon = false);

/// <summary>What the door let in: the token's rights (<see cref="ConnectionAccess.None"/> in open mode), the user (the
/// token's <c>sub</c>, or the name an open-mode client gave), and the limit slots held for the connection, which its
/// teardown releases (an HTTP transport's request holds them while it lasts; MQTT hands them to its connection).</summary>
public sealed record Admitted(ConnectionAccess Access, string? UserId, IDisposable Slots);

/// <summary>One request to enter.</summary>
/// <param name="Where">The path or transport, for the audit trail.</param>
/// <param name="Remote">The client's address (per-IP limit, audit).</param>
/// <param name="Origin">The browser's <c>Origin</c> header, when the transport can carry one.</param>
/// <param name="Handshake">Counts against the gateway's handshake rate.</param>
/// <param name="Authenticate">The token's rights, or null with a token-free reason (called only when tokens are
/// required).</param>
/// <param name="OpenModeUser">The user an open-mode client named (<c>?user=</c>, MQTT's user name), already checked.</param>
/// <param name="Proxy">What the backend's connect proxy is told when the connection carries no token (null: this
/// request cannot be sent there).</param>
/// <param name="ProxyAnswer">The connect proxy's answer the connection already holds, still before its
/// <c>expiresAt</c> (a later request of a SignalR connection, see <see cref="ProxiedConnections"/>): used in place of
/// asking again.</param>
public sealed record AdmissionRequest(
    string Where,
    string? Remote,
    string? Origin,
    bool Handshake,
    Func<Task<(ConnectionAccess? Access, string Reason)>> Authenticate,
    string? OpenModeUser,
    Func<ConnectProxyRequest>? Proxy = null,
    ConnectionAccess? ProxyAnswer = null);

/// <summary>
/// The door every client connection passes, whatever its transport (raw WebSocket, SignalR on every transport, SSE,
/// long polling, MQTT over TCP and over WebSocket). In order: the browser origin when the list is set (403
/// <c>forbidden</c>), refusal while the gateway drains (503 <c>unavailable</c>), the handshake rate (429
/// <c>rate_limited</c>), the token when tokens are required (401 <c>unauthorized</c>, also for a token revoked by
/// <see cref="TokenRevocations"/>; a connection without a token is sent to the backend's connect proxy when one is
/// configured, whose 4xx refuses with the backend's code and whose failure answers 503 <c>unavailable</c>; in open mode
/// a configured connect proxy is asked about every connection and decides who it is), and the connections per user (on this gateway, then across the cluster through
/// <see cref="ClusterUserLimit"/>) and per IP (429 <c>rate_limited</c>), whose slots are held until the connection's teardown. Every refusal but the drain's
/// is audited. HTTP transports come through <see cref="ConnectionGate"/>; MQTT through its CONNECT.
/// <para>What happens after the door is <see cref="ConnectionCommands.OnConnectedAsync"/> (registration) and
/// <see cref="ConnectionCommands.OnDisconnected"/> (teardown), the same for every transport.</para>
/// </summary>
public sealed class ConnectionDoor(
    IOptions<OriginOptions> origins,
    ConnectionLimits limits,
    ConnectionSecurity security,
    ConnectionDrain drain,
    TokenRevocations revocations,
    ClusterUserLimit clusterLimit,
    BackendProxies proxies)
{
    private readonly HashSet<string> _allowedOrigins = new(origins.Value.AllowedOrigins, StringComparer.OrdinalIgnoreCase);

    public bool Secured => security.Secured;

    /// <summary>What can be decided before a protocol's own handshake: the origin and the drain.</summary>
    public DoorRefusal? CheckDoorstep(string? origin, string where, string? remote)
    {
        if (_allowedOrigins.Count > 0 && !string.IsNullOrEmpty(origin) && !_allowedOrigins.Contains(origin))
        {
            security.Audit.OriginRefused(Printable(origin), where, remote);
            return new DoorRefusal(WireCodes.Forbidden, "This origin may not open push connections.", StatusCodes.Status403Forbidden);
        }

        if (drain.IsDraining)
        {
            return new DoorRefusal(WireCodes.Unavailable, "This gateway is shutting down; connect to another.", StatusCodes.Status503ServiceUnavailable, RetrySoon: true);
        }

        return null;
    }

    /// <summary>Runs the whole door. On success the caller owns <see cref="Admitted.Slots"/> and hands them to the
    /// connection it opens (or disposes them when it opens none).</summary>
    public async Task<(Admitted? Admitted, DoorRefusal? Refusal)> AdmitAsync(AdmissionRequest request)
    {
        if (CheckDoorstep(request.Origin, request.Where, request.Remote) is { } early)
        {
            return (null, early);
        }

        if (request.Handshake && !limits.TryHandshake())
        {
            security.Audit.LimitExceeded(Limits.HandshakesPerSecond, null, request.Where, request.Remote);
            return (null, new DoorRefusal(WireCodes.RateLimited, "Too many new connections; retry shortly.", StatusCodes.Status429TooManyRequests, RetrySoon: true));
        }

        var access = ConnectionAccess.None;
        var userId = request.OpenModeUser;
        if (security.Secured)
        {
            var (granted, reason) = await request.Authenticate();
            if (granted is null && reason is TokenReasons.Missing or TokenReasons.Malformed && AsksProxy(request))
            {
                var (decided, refused) = await AskProxyAsync(request);
                if (decided is null)
                {
                    return (null, refused);
                }

                granted = decided;
            }

            if (granted is null)
            {
                security.Audit.TokenRefused(reason, request.Where, request.Remote);
                return (null, new DoorRefusal(WireCodes.Unauthorized,
                    reason == TokenReasons.Missing ? "A token is required (Authorization: Bearer, or ?access_token=)." : $"The token was refused ({reason}).",
                    StatusCodes.Status401Unauthorized));
            }

            try
            {
                if (!granted.FromConnectProxy && await revocations.IsRevokedAsync(granted))
                {
                    security.Audit.TokenRefused(TokenReasons.Revoked, request.Where, request.Remote);
                    return (null, new DoorRefusal(WireCodes.Unauthorized, $"The token was refused ({TokenReasons.Revoked}).", StatusCodes.Status401Unauthorized));
                }
            }
            catch (PushRejectedException unavailable)
            {
                return (null, new DoorRefusal(unavailable.Code, unavailable.Message, Problems.StatusOf(unavailable.Code), RetrySoon: true));
            }

            access = granted;
            userId = TopicName.IsValidUserId(granted.UserId) ? granted.UserId : null;
        }
        else if (AsksProxy(request))
        {
            // Open mode: the operator configured a connect proxy, so the backend still decides who the connection is
            // (told the user the client named, if any) and its rights hold.
            var (decided, refused) = await AskProxyAsync(request);
            if (decided is null)
            {
                return (null, refused);
            }

            access = decided;
            userId = decided.UserId;
        }

        var slots = limits.TryConnect(userId, request.Remote, out var refusedBy);
        if (slots is null)
        {
            security.Audit.LimitExceeded(refusedBy!, userId, request.Where, request.Remote);
            return (null, new DoorRefusal(WireCodes.RateLimited,
                refusedBy == Limits.ConnectionsPerUser ? "Too many connections for this user." : "Too many connections from this address.",
                StatusCodes.Status429TooManyRequests));
        }

        if (userId is not null && clusterLimit.Enabled)
        {
            var (clusterSlot, refused) = await clusterLimit.TryOpenAsync(userId);
            if (clusterSlot is null)
            {
                slots.Dispose();
                if (refused == WireCodes.Unavailable)
                {
                    return (null, new DoorRefusal(WireCodes.Unavailable, "Could not count this user's connections; try again.",
                        StatusCodes.Status503ServiceUnavailable, RetrySoon: true));
                }

                security.Audit.LimitExceeded(Limits.ConnectionsPerUser, userId, request.Where, request.Remote);
                return (null, new DoorRefusal(WireCodes.RateLimited, "Too many connections for this user.", StatusCodes.Status429TooManyRequests));
            }

            slots = new Both(slots, clusterSlot);
        }

        return (new Admitted(access, userId, slots), null);
    }

    private bool AsksProxy(AdmissionRequest request) => proxies.ConnectEnabled && request.Proxy is not null;

    /// <summary>The connect proxy's answer (or the one the connection already holds), or the refusal to answer with
    /// (audited).</summary>
    private async Task<(ConnectionAccess? Access, DoorRefusal? Refusal)> AskProxyAsync(AdmissionRequest request)
    {
        if (request.ProxyAnswer is { } held)
        {
            return (held, null);
        }

        var (decided, refused) = await proxies.ConnectAsync(request.Proxy!() with { User = request.OpenModeUser });
        if (decided is null)
        {
            security.Audit.TokenRefused("connect_proxy:" + refused!.Code, request.Where, request.Remote);
            return (null, new DoorRefusal(refused.Code, refused.Message, refused.Status, RetrySoon: refused.Code == WireCodes.Unavailable));
        }

        return (decided, null);
    }

    private sealed class Both(IDisposable first, IDisposable second) : IDisposable
    {
        public void Dispose()
        {
            first.Dispose();
            second.Dispose();
        }
    }

    /// <summary>An origin as given, cut short and stripped of control characters, for the log.</summary>
    private static string Printable(string origin) =>
        new([.. origin.Take(200).Select(c => char.IsControl(c) ? '?' : c)]);

    /// <summary>The names of the limits, as the audit trail gives them.</summary>
    public static class Limits
    {
        public const string HandshakesPerSecond = "handshakes_per_second";
        public const string ConnectionsPerUser = "connections_per_user";
        public const string ConnectionsPerIp = "connections_per_ip";
    }
}

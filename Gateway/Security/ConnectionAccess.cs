using System.Security.Claims;

namespace OrleansPush.Gateway.Security;

/// <summary>
/// What one connection (or one API caller) may do, read once from its token: who it is (<c>sub</c>), which topics it
/// may subscribe to (<c>topics</c>) and publish to (<c>publish</c>), whether it may take admin actions (<c>admin</c>),
/// and when the token runs out (<c>exp</c>). Immutable: a refresh swaps the whole object.
/// </summary>
public sealed class ConnectionAccess
{
    public const string SubjectClaim = "sub";
    public const string TopicsClaim = "topics";
    public const string PublishClaim = "publish";
    public const string AdminClaim = "admin";
    public const string ExpiryClaim = "exp";
    public const string IssuedAtClaim = "iat";

    /// <summary>No token (open mode, or a connection whose transport did not authenticate it): no pattern rights.
    /// In open mode the gateway does not consult patterns, so this costs open connections nothing.</summary>
    public static readonly ConnectionAccess None = new(null, [], [], admin: false, expiresAt: null);

    public ConnectionAccess(string? userId, IReadOnlyList<TopicPattern> subscribe, IReadOnlyList<TopicPattern> publish, bool admin, DateTimeOffset? expiresAt,
        long? issuedAt = null, IReadOnlyList<string>? subscriptions = null)
    {
        Subscriptions = subscriptions ?? [];
        IssuedAt = issuedAt;
        UserId = userId;
        Subscribe = subscribe;
        Publish = publish;
        Admin = admin;
        ExpiresAt = expiresAt;
    }

    /// <summary>The token's <c>sub</c>, or null for a token without one.</summary>
    public string? UserId { get; }

    public IReadOnlyList<TopicPattern> Subscribe { get; }

    public IReadOnlyList<TopicPattern> Publish { get; }

    public bool Admin { get; }

    /// <summary>Topics the connect proxy subscribed this connection to (this connection only, not the user's
    /// server-side subscriptions); empty for a token. The connection may subscribe to each of them.</summary>
    public IReadOnlyList<string> Subscriptions { get; }

    /// <summary>What the backend's connect proxy was asked when it granted this (a connection without a token), so that
    /// it can be asked again at <see cref="ExpiresAt"/>; null for a token.</summary>
    public Proxies.ConnectProxyRequest? ProxyRequest { get; init; }

    /// <summary>True when the backend's connect proxy granted this: no <c>iat</c>, so a token revocation does not apply
    /// to it; the backend decides at each connect and each time its answer expires. Its rights hold in open mode too.</summary>
    public bool FromConnectProxy => ProxyRequest is not null;

    /// <summary>The same rights until <paramref name="expiresAt"/>.</summary>
    public ConnectionAccess ExpiringAt(DateTimeOffset expiresAt) =>
        new(UserId, Subscribe, Publish, Admin, expiresAt, IssuedAt, Subscriptions) { ProxyRequest = ProxyRequest };

    /// <summary>When the token expires (its <c>exp</c>); null when it does not.</summary>
    public DateTimeOffset? ExpiresAt { get; }

    /// <summary>When the token was issued (its <c>iat</c>, Unix seconds); null when it does not say.</summary>
    public long? IssuedAt { get; }

    /// <summary>Whether a revocation of the user's tokens at or before <paramref name="revokedBefore"/> (Unix seconds;
    /// 0: none) covers this token. A token that does not say when it was issued is covered by any revocation.</summary>
    public bool RevokedBy(long revokedBefore) => revokedBefore > 0 && (IssuedAt is not { } iat || iat <= revokedBefore);

    public bool MaySubscribe(string topic) => AnyMatch(Subscribe, topic) || Contains(Subscriptions, topic);

    public bool MayPublish(string topic) => AnyMatch(Publish, topic);

    /// <summary>Reads a validated principal. Patterns that are not patterns (bad characters, too long) are dropped:
    /// they could not match a valid topic anyway, and refusing the token for them would lock a user out entirely.</summary>
    public static ConnectionAccess FromPrincipal(ClaimsPrincipal principal)
    {
        var subject = principal.FindFirst(SubjectClaim)?.Value ?? principal.FindFirst(ClaimTypes.NameIdentifier)?.Value;
        DateTimeOffset? expiresAt = long.TryParse(principal.FindFirst(ExpiryClaim)?.Value, System.Globalization.NumberStyles.Integer,
            System.Globalization.CultureInfo.InvariantCulture, out var exp) ? DateTimeOffset.FromUnixTimeSeconds(Math.Clamp(exp, 0, 253402300799)) : null;
        var admin = principal.FindAll(AdminClaim).Any(c => string.Equals(c.Value, "true", StringComparison.OrdinalIgnoreCase));
        long? issuedAt = long.TryParse(principal.FindFirst(IssuedAtClaim)?.Value, System.Globalization.NumberStyles.Integer,
            System.Globalization.CultureInfo.InvariantCulture, out var iat) ? iat : null;
        return new ConnectionAccess(subject, Patterns(principal, TopicsClaim), Patterns(principal, PublishClaim), admin, expiresAt, issuedAt);
    }

    private static TopicPattern[] Patterns(ClaimsPrincipal principal, string claim) =>
        [.. principal.FindAll(claim).Select(c => TopicPattern.TryParse(c.Value, out var p) ? p : null).Where(p => p is not null).Select(p => p!).Take(1000)];

    private static bool Contains(IReadOnlyList<string> topics, string topic)
    {
        for (var i = 0; i < topics.Count; i++)
        {
            if (string.Equals(topics[i], topic, StringComparison.Ordinal))
            {
                return true;
            }
        }

        return false;
    }

    private static bool AnyMatch(IReadOnlyList<TopicPattern> patterns, string topic)
    {
        for (var i = 0; i < patterns.Count; i++)
        {
            if (patterns[i].Matches(topic))
            {
                return true;
            }
        }

        return false;
    }
}

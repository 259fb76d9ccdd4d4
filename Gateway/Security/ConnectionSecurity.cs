using System.Collections.Concurrent;
using Microsoft.Extensions.Options;
using OrleansPush.Gateway.Connections;

namespace OrleansPush.Gateway.Security;

/// <summary>
/// The security rules every transport applies to its connections, in one place: who may subscribe and publish where
/// (checked on every request), the per-connection message rate, and token expiry and refresh.
/// <para>Subscribing: a personal channel is for its owner only (enforced by <see cref="ConnectionCommands"/> in every
/// mode); with tokens required, any other topic needs a <c>topics</c> pattern that matches it or a namespace with
/// <c>PublicSubscribe</c>. Publishing from a connection needs the namespace's <c>ClientPublish</c> and, with tokens
/// required, a <c>publish</c> pattern. Everything else is denied. In open mode (no key) patterns are not consulted,
/// with two exceptions, because an operator who configured a backend proxy expects it to decide: a connection the
/// connect proxy admitted is held to the rights the backend gave it, and with a subscribe proxy configured a subscribe
/// those rights (or a public namespace, or the connection's own personal channel) do not cover goes to the backend.</para>
/// </summary>
public sealed class ConnectionSecurity(
    IOptions<AuthOptions> auth,
    IOptions<TopicOptions> topics,
    IOptions<Proxies.ProxyOptions> proxies,
    ConnectionLimits limits,
    TokenExpiry expiry,
    TokenValidator validator,
    TokenRevocations revocations,
    SecurityAudit audit)
{
    private readonly bool _subscribeProxy = proxies.Value.Subscribe.Url is not null;

    /// <summary>True when tokens are required (a key is configured).</summary>
    public bool Secured { get; } = auth.Value.Secured;

    public SecurityAudit Audit => audit;

    /// <exception cref="PushRejectedException"><c>forbidden</c>, audited.</exception>
    public void CheckSubscribe(PushConnection connection, string topic)
    {
        if (MaySubscribe(connection, topic))
        {
            return;
        }

        audit.SubscribeForbidden(connection.UserId, topic, connection.Transport, connection.RemoteAddress);
        throw new PushRejectedException(WireCodes.Forbidden, "The token does not grant subscribing to this topic.");
    }

    /// <summary>Whether the token (or the namespace, or open mode) allows the subscribe, without auditing a refusal.</summary>
    public bool MaySubscribe(PushConnection connection, string topic) =>
        !RightsApply(connection) && !_subscribeProxy
            // The owner test uses the token's sub, not the connection's user: a transport that named its user some other
            // way (MQTT's user name, before it validates a token) gets no personal channel with tokens required. In open
            // mode the connection's user is whom it named (or the connect proxy's answer).
            || TopicName.PersonalOwner(topic) is { } owner && owner == (Secured ? connection.Access.UserId : connection.UserId)
            || topics.Value.For(topic).PublicSubscribe || connection.Access.MaySubscribe(topic);

    /// <summary>Whether the connection's patterns are consulted: with tokens required, and for a connection the connect
    /// proxy admitted in any mode.</summary>
    private bool RightsApply(PushConnection connection) => Secured || connection.Access.FromConnectProxy;

    /// <exception cref="PushRejectedException"><c>forbidden</c>, audited.</exception>
    public void CheckClientPublish(PushConnection connection, string topic)
    {
        if (TopicName.PersonalOwner(topic) is not null || !topics.Value.For(topic).ClientPublish)
        {
            audit.PublishForbidden(connection.UserId, topic, connection.Transport, connection.RemoteAddress);
            throw new PushRejectedException(WireCodes.Forbidden, "Clients may not publish to this topic's namespace.");
        }

        if (RightsApply(connection) && !connection.Access.MayPublish(topic))
        {
            audit.PublishForbidden(connection.UserId, topic, connection.Transport, connection.RemoteAddress);
            throw new PushRejectedException(WireCodes.Forbidden, "The token does not grant publishing to this topic.");
        }
    }

    /// <summary>Takes one message from the connection's rate; false (audited) when it is spent: answer
    /// <c>rate_limited</c> and keep the connection.</summary>
    public bool TryAcceptMessage(PushConnection connection)
    {
        if (limits.TryMessage(connection))
        {
            return true;
        }

        audit.LimitExceeded("messages_per_second", connection.UserId, connection.Transport, connection.RemoteAddress);
        return false;
    }

    /// <summary>Starts watching the connection's token expiry (no-op without one).</summary>
    public void OnConnected(PushConnection connection) => expiry.Track(connection);

    public void OnDisconnected(PushConnection connection) => expiry.Untrack(connection);

    /// <summary>Replaces the connection's rights with a fresh token's, which must be valid and for the same user; the
    /// connection then lives until the new expiry. The subscriptions the client made stay where the new token still
    /// grants them; those it no longer grants are returned.</summary>
    /// <exception cref="PushRejectedException"><c>unauthorized</c> (invalid token) or <c>forbidden</c> (another user).</exception>
    /// <returns>The client's own subscriptions the new token no longer grants (audited): the caller ends them.</returns>
    public async Task<string[]> RefreshAsync(PushConnection connection, string? token)
    {
        if (!Secured)
        {
            return [];
        }

        var (access, reason) = await validator.ValidateAsync(token);
        if (access is null)
        {
            audit.TokenRefused(reason, connection.Transport + " refresh", connection.RemoteAddress);
            throw new PushRejectedException(WireCodes.Unauthorized, $"The token was refused ({reason}).");
        }

        if (await revocations.IsRevokedAsync(access))
        {
            audit.TokenRefused(TokenReasons.Revoked, connection.Transport + " refresh", connection.RemoteAddress);
            throw new PushRejectedException(WireCodes.Unauthorized, $"The token was refused ({TokenReasons.Revoked}).");
        }

        if (access.UserId != connection.UserId)
        {
            audit.TokenRefused("other_user", connection.Transport + " refresh", connection.RemoteAddress);
            throw new PushRejectedException(WireCodes.Forbidden, "A refresh must carry a token for the same user (sub).");
        }

        return Replace(connection, access);
    }

    /// <summary>Gives the connection new rights (a fresh token's, or the connect proxy's new answer for the same user)
    /// and watches their expiry. The client's own subscriptions that the old rights granted and the new ones do not are
    /// returned (audited) for the caller to end; one a subscribe proxy allowed stays (it was never the rights').</summary>
    public string[] Replace(PushConnection connection, ConnectionAccess access)
    {
        var granted = connection.ClientTopics().Where(t => MaySubscribe(connection, t)).ToArray();
        connection.Access = access;
        expiry.Track(connection);
        if (connection.IsGone)
        {
            // Its teardown (which untracks) may have run before the Track above.
            expiry.Untrack(connection);
        }

        audit.TokenRefreshed(connection.UserId, connection.Id, access.ExpiresAt);
        var revoked = granted.Where(t => !MaySubscribe(connection, t)).ToArray();
        foreach (var topic in revoked)
        {
            audit.SubscribeForbidden(connection.UserId, topic, connection.Transport + " refresh", connection.RemoteAddress);
        }

        return revoked;
    }
}

/// <summary>Closes connections whose token has expired (plus the configured clock skew) with <c>unauthorized</c>. A
/// connection whose rights came from the connect proxy is handed to <see cref="RenewProxied"/> at its answer's
/// <c>expiresAt</c> (no skew: the backend set it) instead. One sweep per second over the connections that have an
/// expiry, rather than a timer per connection; with none to watch it sleeps until one is tracked.</summary>
public sealed class TokenExpiry(IOptions<AuthOptions> auth, TimeProvider time, SecurityAudit audit, ILogger<TokenExpiry> logger) : BackgroundService
{
    /// <summary>Asks the backend again for a connection whose connect proxy answer expired (set by
    /// <see cref="ConnectionCommands"/>); it re-tracks or closes the connection. Unset: such a connection is closed.</summary>
    public Func<PushConnection, Task>? RenewProxied { get; set; }

    public static readonly TimeSpan SweepInterval = TimeSpan.FromSeconds(1);
    private readonly ConcurrentDictionary<PushConnection, byte> _watched = new();
    private readonly TimeSpan _skew = auth.Value.Jwt.ClockSkew;

    // Set while the sweeper sleeps on an empty watch list; the next Track completes it.
    private TaskCompletionSource? _idle;

    public int Watched => _watched.Count;

    public void Track(PushConnection connection)
    {
        if (connection.Access.ExpiresAt is not null)
        {
            _watched[connection] = 0;

            // Pairs with the sweeper's exchange then emptiness check: one of the two sees the other's write.
            Interlocked.MemoryBarrier();
            Volatile.Read(ref _idle)?.TrySetResult();
        }
    }

    public void Untrack(PushConnection connection) => _watched.TryRemove(connection, out _);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                if (_watched.IsEmpty)
                {
                    var idle = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    Interlocked.Exchange(ref _idle, idle);
                    if (_watched.IsEmpty)
                    {
                        await idle.Task.WaitAsync(stoppingToken);
                    }

                    Interlocked.Exchange(ref _idle, null);
                }

                await Task.Delay(SweepInterval, time, stoppingToken);
                try
                {
                    Sweep(time.GetUtcNow());
                }
                catch (Exception ex)
                {
                    SecurityLog.ExpirySweepFailed(logger, ex);
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    internal void Sweep(DateTimeOffset now)
    {
        foreach (var (connection, _) in _watched)
        {
            if (connection.Access.ExpiresAt is { } expires && expires + SkewOf(connection.Access) <= now && _watched.TryRemove(connection, out _))
            {
                // A refresh may have landed between the check and the removal.
                if (connection.Access.ExpiresAt is { } renewed && renewed + SkewOf(connection.Access) > now)
                {
                    _watched.TryAdd(connection, 0);
                    continue;
                }

                if (connection.Access.FromConnectProxy && RenewProxied is { } renew)
                {
                    _ = RenewAsync(renew, connection);
                    continue;
                }

                audit.TokenExpired(connection.UserId, connection.Id, connection.RemoteAddress);
                connection.Close(WireCodes.Unauthorized);
            }
        }
    }

    private TimeSpan SkewOf(ConnectionAccess access) => access.FromConnectProxy ? TimeSpan.Zero : _skew;

    private async Task RenewAsync(Func<PushConnection, Task> renew, PushConnection connection)
    {
        try
        {
            await renew(connection);
        }
        catch (Exception ex)
        {
            // Never left half-renewed and unwatched: closed, and its client reconnects (which asks the backend again).
            Proxies.ProxyLog.RenewFailed(logger, connection.Id, ex);
            connection.Close(WireCodes.Unavailable);
        }
    }
}

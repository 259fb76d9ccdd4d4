using Microsoft.Extensions.Options;
using OrleansPush.Gateway.Hosting;
using OrleansPush.Gateway.Publishing;
using OrleansPush.Gateway.Routing;
using OrleansPush.Gateway.Security;
using OrleansPush.Hosting.Webhooks;

namespace OrleansPush.Gateway.Connections;

/// <summary>
/// What a client can ask for, whatever its transport: the rules (names, personal channels, limits, who may publish)
/// live here once, and each transport only translates its frames to these calls.
/// </summary>
public sealed class ConnectionCommands
{
    private readonly TopicRouter _router;
    private readonly UserConnections _users;
    private readonly Publisher _publisher;
    private readonly GatewayOptions _options;
    private readonly TopicOptions _topics;
    private readonly ILogger<ConnectionCommands> _logger;
    private readonly ConnectionDrain _drain;
    private readonly ConnectionSecurity _security;
    private readonly WebhookEvents _webhooks;
    private readonly Proxies.BackendProxies _proxies;
    private readonly TimeProvider _time;

    /// <summary>How long a connection keeps its connect proxy answer past its <c>expiresAt</c> when the backend, asked
    /// again, does not answer (as Centrifugo's refresh proxy does: a backend's short outage drops no connection).</summary>
    public static readonly TimeSpan ProxyRetryDelay = TimeSpan.FromMinutes(1);

    public ConnectionCommands(TopicRouter router, UserConnections users, Publisher publisher, IOptions<GatewayOptions> options,
        IOptions<TopicOptions> topics, ILogger<ConnectionCommands> logger, ConnectionDrain drain,
        ConnectionSecurity security, WebhookEvents webhooks, Proxies.BackendProxies proxies, TokenExpiry expiry, TimeProvider time)
    {
        _time = time;
        expiry.RenewProxied = RenewFromProxyAsync;
        _webhooks = webhooks;
        _security = security;
        _proxies = proxies;
        _drain = drain;
        _router = router;
        _users = users;
        _publisher = publisher;
        _options = options.Value;
        _topics = topics.Value;
        _logger = logger;
        _users.SubscriptionChanged += OnServerSubscriptionChanged;
    }

    /// <summary>Registration, the same for every transport once the <see cref="ConnectionDoor"/> let the connection in:
    /// it is counted (gauge, drain, token expiry) and, for a user, attached as <paramref name="registration"/> says. A
    /// <see cref="Registration.Full"/> connection follows its personal channel and its server-side subscriptions.
    /// <paramref name="resume"/> (optional, e.g. SSE's <c>Last-Event-ID</c>) names where to resume each of those topics
    /// from. With <paramref name="holdForResume"/> (transports whose client can send <c>sub</c> later) those topics hold live
    /// messages back for a moment, so a client that resumes one of them with <c>since</c> gets every message in order.
    /// Returns once every such subscription is recorded (their catch-ups may still run), with the topics joined.
    /// <para>Every connection registered here is torn down by <see cref="OnDisconnected"/>, which undoes exactly what
    /// this did (a connection torn down before it was registered is only unsubscribed). A connection that goes away
    /// meanwhile (while the user's grain was slow to answer) is left with nothing: no subscription, no user lease, no
    /// presence.</para></summary>
    /// <exception cref="PushRejectedException"><c>unavailable</c>: the connection went away first.</exception>
    public async Task<IReadOnlyList<(string Topic, Subscribing Subscribing)>> OnConnectedAsync(PushConnection connection, Registration registration = Registration.Full,
        Func<string, Since?>? resume = null, bool holdForResume = false)
    {
        if (!connection.BeginRegistration(registration))
        {
            throw new PushRejectedException(WireCodes.Unavailable, "The connection is closing.");
        }

        _drain.Track(connection);
        Observability.GatewayMetrics.ConnectionOpened(connection.Transport);
        _security.OnConnected(connection);
        if (connection.UserId is not { } userId)
        {
            return [];
        }

        if (registration == Registration.Local)
        {
            _users.AddLocal(connection);
            return [];
        }

        var serverSide = await _users.AddAsync(connection);
        if (connection.IsGone)
        {
            // Its teardown ran while we waited: undo the add it could not see.
            _users.Remove(connection);
            throw new PushRejectedException(WireCodes.Unavailable, "The connection is closing.");
        }

        if (registration == Registration.Attached)
        {
            return [];
        }

        // The connect proxy's subscriptions are this connection's alone: subscribed like the client's own (the access
        // grants them), so reconciling the user's server-side subscriptions never touches them.
        string[] topics = [TopicName.Personal(userId), .. serverSide];
        var proxied = connection.Access.Subscriptions.Where(t => !topics.Contains(t, StringComparer.Ordinal)).Distinct(StringComparer.Ordinal)
            .Select(t => (t, BeginSubscribe(connection, t, resume?.Invoke(t), 0, hold: holdForResume))).ToArray();
        var subscribing = topics.Select(t => BeginSubscribe(connection, t, resume?.Invoke(t), 0, serverSide: true, hold: holdForResume)).ToArray();
        await Task.WhenAll(subscribing.Concat(proxied.Select(p => p.Item2)).Select(s => s.AdmittedAsync()));
        return [.. topics.Zip(subscribing), .. proxied];
    }

    /// <summary>Teardown, the same for every transport; safe to call more than once and for a connection that was never
    /// registered.</summary>
    public void OnDisconnected(PushConnection connection)
    {
        // First: nothing may subscribe it from now on (a subscribe in flight is refused by the router).
        connection.MarkGone();
        if (connection.EndRegistration())
        {
            _drain.Untrack(connection);
            Observability.GatewayMetrics.ConnectionClosed(connection.Transport);
            _security.OnDisconnected(connection);
            _users.Remove(connection);
        }

        foreach (var topic in connection.DrainTopics())
        {
            _router.Unsubscribe(connection, topic);
        }
    }

    /// <summary>Subscribes; completes once the connection is live on the topic (after any replay).</summary>
    /// <exception cref="PushRejectedException">bad_topic, forbidden or unavailable.</exception>
    public Task<SubscribeResult> SubscribeAsync(PushConnection connection, string? topic, Since? since, int last, bool presenceEvents = false, bool serverSide = false, bool hold = false) =>
        BeginSubscribe(connection, topic, since, last, presenceEvents, serverSide, hold).Completed;

    /// <summary>Subscribes, and returns as soon as the request is on its way: a transport that must answer before a long
    /// replay is over (SSE starts its stream, MQTT its SUBACK) awaits <see cref="Subscribing.AdmittedAsync"/>.
    /// A client's own subscribe needs the right to the topic (<see cref="ConnectionSecurity"/>); <paramref name="serverSide"/>
    /// ones (the personal channel, a backend's server-side subscriptions) were decided by the backend and skip that
    /// check, as does the client's own subscribe to such a topic again (after a <c>reset</c>).</summary>
    /// <exception cref="PushRejectedException">bad_topic, forbidden or unavailable.</exception>
    public Subscribing BeginSubscribe(PushConnection connection, string? topic, Since? since, int last, bool presenceEvents = false, bool serverSide = false, bool hold = false)
    {
        if (!TopicName.IsValid(topic))
        {
            throw new PushRejectedException(WireCodes.BadTopic, "A topic is 1-200 characters of A-Z a-z 0-9 _ - . : / @.");
        }

        if (TopicName.IsReserved(topic!))
        {
            throw new PushRejectedException(WireCodes.Forbidden, "Topics of a namespace that starts with _ are reserved.");
        }

        if (TopicName.PersonalOwner(topic!) is { } owner && owner != connection.UserId)
        {
            throw new PushRejectedException(WireCodes.Forbidden, "A personal channel is for its user alone.");
        }

        if (!serverSide && !connection.IsServerSide(topic!) && !_security.MaySubscribe(connection, topic!))
        {
            if (!_proxies.SubscribeEnabled)
            {
                _security.CheckSubscribe(connection, topic!);
            }

            return SubscribeIfProxyAllows(connection, topic!, since, last, presenceEvents, hold);
        }

        return BeginAllowedSubscribe(connection, topic!, since, last, presenceEvents, serverSide, hold);
    }

    /// <summary>A subscribe the connection's patterns do not cover, with a subscribe proxy configured: the backend
    /// decides (no answer in time: <c>unavailable</c>).</summary>
    private Subscribing SubscribeIfProxyAllows(PushConnection connection, string topic, Since? since, int last, bool presenceEvents, bool hold)
    {
        var started = StartAsync();
        return new Subscribing(AdmittedAsync(), CompletedAsync());

        async Task<Subscribing> StartAsync()
        {
            if (await _proxies.SubscribeAsync(connection.UserId, topic) is { } refused)
            {
                if (refused.Code == WireCodes.Forbidden)
                {
                    _security.Audit.SubscribeForbidden(connection.UserId, topic, connection.Transport, connection.RemoteAddress);
                }

                throw new PushRejectedException(refused.Code, refused.Message);
            }

            return BeginAllowedSubscribe(connection, topic, since, last, presenceEvents, serverSide: false, hold);
        }

        async Task AdmittedAsync()
        {
            try
            {
                await (await started).Admitted;
            }
            catch (Exception)
            {
                // Refused: CompletedAsync carries why (Admitted itself never faults).
            }
        }

        async Task<SubscribeResult> CompletedAsync() => await (await started).Completed;
    }

    private Subscribing BeginAllowedSubscribe(PushConnection connection, string topic, Since? since, int last, bool presenceEvents, bool serverSide, bool hold)
    {
        var added = connection.AddTopic(topic!, _options.MaxSubscriptionsPerConnection);
        switch (added)
        {
            case TopicAdded.Gone:
                throw new PushRejectedException(WireCodes.Unavailable, "The connection is closing.");
            case TopicAdded.OverLimit:
                throw new PushRejectedException(WireCodes.Forbidden, $"A connection may hold at most {_options.MaxSubscriptionsPerConnection} subscriptions.");
        }

        if (serverSide)
        {
            connection.MarkServerSide(topic!);
        }

        var subscribing = _router.Subscribe(connection, topic!, since, last, presenceEvents, hold);
        return added == TopicAdded.Added ? new Subscribing(subscribing.Admitted, UndoIfRefusedAsync(subscribing.Completed)) : subscribing;

        // A refused subscribe leaves nothing behind.
        async Task<SubscribeResult> UndoIfRefusedAsync(Task<SubscribeResult> completed)
        {
            try
            {
                return await completed;
            }
            catch (PushRejectedException) when (connection.RemoveTopic(topic!))
            {
                _router.Unsubscribe(connection, topic!);
                throw;
            }
        }
    }

    /// <summary>Takes a fresh token (see <see cref="Security.ConnectionSecurity.RefreshAsync"/>) and ends the client's
    /// subscriptions it no longer grants. Returns those topics.</summary>
    public async Task<string[]> RefreshAsync(PushConnection connection, string? token)
    {
        var revoked = await _security.RefreshAsync(connection, token);
        foreach (var topic in revoked)
        {
            Unsubscribe(connection, topic);
        }

        return revoked;
    }

    /// <summary>The connect proxy's answer for <paramref name="connection"/> reached its <c>expiresAt</c>: the backend is
    /// asked again, with what it was told at the door and the user it named (DESIGN.md "Backends in the loop"; the same
    /// moment and outcomes as Centrifugo's refresh proxy). Still admitted as the same user: the connection stays and
    /// takes the new answer (patterns, expiry, per-connection subscriptions: new ones are subscribed, those the new
    /// answer no longer grants end). Refused (4xx), or named another user: closed with the backend's code
    /// (<c>forbidden</c> for another user). No answer (timeout, 5xx, a body off the contract): the connection keeps its
    /// answer for <see cref="ProxyRetryDelay"/> and the backend is asked again then.</summary>
    private async Task RenewFromProxyAsync(PushConnection connection)
    {
        var held = connection.Access;
        if (held.ProxyRequest is not { } asked)
        {
            // A token refresh took over since the sweep (and watches its own expiry).
            return;
        }

        var (renewed, refused) = await _proxies.ConnectAsync(asked with { User = connection.UserId });
        if (connection.IsGone)
        {
            return;
        }

        if (refused is { NoAnswer: true })
        {
            var retryAt = _time.GetUtcNow() + ProxyRetryDelay;
            Proxies.ProxyLog.RenewPostponed(_logger, connection.Id, retryAt);
            _security.Replace(connection, held.ExpiringAt(retryAt));
            return;
        }

        if (renewed is null || renewed.UserId != connection.UserId)
        {
            var code = refused?.Code ?? WireCodes.Forbidden;
            _security.Audit.TokenRefused("connect_proxy:" + (refused is null ? "other_user" : code), connection.Transport + " refresh", connection.RemoteAddress);
            connection.Close(code);
            return;
        }

        foreach (var topic in _security.Replace(connection, renewed))
        {
            Unsubscribe(connection, topic);
        }

        if (connection.Registration == Registration.Full)
        {
            var holds = connection.ClientTopics();
            foreach (var topic in renewed.Subscriptions.Except(held.Subscriptions, StringComparer.Ordinal).Except(holds, StringComparer.Ordinal))
            {
                SubscribeQuietly(connection, topic, serverSide: false);
            }
        }
    }

    public void Unsubscribe(PushConnection connection, string? topic)
    {
        if (!TopicName.IsValid(topic))
        {
            throw new PushRejectedException(WireCodes.BadTopic, "A topic is 1-200 characters of A-Z a-z 0-9 _ - . : / @.");
        }

        if (connection.RemoveTopic(topic!))
        {
            _router.Unsubscribe(connection, topic!);
        }
    }

    /// <summary>Sends <paramref name="topic"/>'s latest value again to a connection that already follows the topic, marked
    /// as a latest value (it moves no position): MQTT's SUBSCRIBE again with retain handling 0 re-sends the retained
    /// messages (MQTT 3.1.1 §3.8.4, MQTT 5 §3.3.1.3). Nothing when the namespace keeps no latest value or the topic has
    /// none.</summary>
    public async Task ResendLatestAsync(PushConnection connection, string topic)
    {
        if (!_topics.For(topic).KeepsLatestValue)
        {
            return;
        }

        var slice = await _router.ReadLatestAsync(topic);
        if (slice.Messages is [var latest] && !connection.IsGone)
        {
            connection.Deliver(new OutboundMessage(latest) { Replayed = true, Retained = true });
        }
    }

    /// <summary>A client's own publish, where the topic's namespace allows it; a <c>message.published</c> webhook event
    /// follows it when an endpoint wants those. <paramref name="properties"/>: the message's transport properties
    /// (<see cref="TopicMessage.Properties"/>), when it has any. A <paramref name="retained"/> one (MQTT's retain flag)
    /// becomes the topic's latest value where the namespace keeps one, and an empty retained one clears it without being
    /// published (no webhook event either).</summary>
    public async Task<TopicPosition> PublishAsync(PushConnection connection, string? topic, ReadOnlyMemory<byte> data, PayloadFormat format = PayloadFormat.Json,
        byte[]? properties = null, bool retained = false)
    {
        if (!TopicName.IsValid(topic))
        {
            throw new PushRejectedException(WireCodes.BadTopic, "A topic is 1-200 characters of A-Z a-z 0-9 _ - . : / @.");
        }

        _security.CheckClientPublish(connection, topic!);
        if (_proxies.PublishEnabled)
        {
            (data, format) = await PublishProxyAllowsAsync(connection, topic!, data, format);
        }

        if (!retained)
        {
            var position = await _publisher.PublishAsync(topic!, data, idempotencyKey: null, format, properties);
            await _webhooks.EmitAsync(WebhookEventTypes.MessagePublished, topic!, topic, connection.UserId, data, format);
            return position;
        }

        var retainedAt = await _publisher.PublishRetainedAsync(topic!, data, format, properties);
        if (!data.IsEmpty)
        {
            await _webhooks.EmitAsync(WebhookEventTypes.MessagePublished, topic!, topic, connection.UserId, data, format);
        }

        return retainedAt;
    }

    /// <summary>A client publish the backend's publish proxy sees first: it may refuse it (throws) or replace its
    /// payload (returned).</summary>
    private async Task<(ReadOnlyMemory<byte> Payload, PayloadFormat Format)> PublishProxyAllowsAsync(PushConnection connection, string topic,
        ReadOnlyMemory<byte> data, PayloadFormat format)
    {
        var (payload, kind, refused) = await _proxies.PublishAsync(connection.UserId, topic, data, format);
        if (refused is not null)
        {
            if (refused.Code == WireCodes.Forbidden)
            {
                _security.Audit.PublishForbidden(connection.UserId, topic, connection.Transport, connection.RemoteAddress);
            }

            throw new PushRejectedException(refused.Code, refused.Message);
        }

        return (payload, kind);
    }

    private void OnServerSubscriptionChanged(PushConnection connection, string topic, bool subscribed)
    {
        if (connection.Registration != Registration.Full)
        {
            return;
        }

        if (!subscribed)
        {
            Unsubscribe(connection, topic);
            return;
        }

        SubscribeQuietly(connection, topic, serverSide: true);
    }

    /// <summary>A subscription the backend decided (not the client): a failure is logged, not answered.</summary>
    private void SubscribeQuietly(PushConnection connection, string topic, bool serverSide)
    {
        _ = SubscribeQuietlyAsync();

        async Task SubscribeQuietlyAsync()
        {
            try
            {
                await SubscribeAsync(connection, topic, null, 0, serverSide: serverSide);
            }
            catch (Exception ex)
            {
                GatewayLog.ServerSubscriptionFailed(_logger, topic, connection.Id, ex);
            }
        }
    }
}

using System.Buffers;
using System.Collections.Concurrent;
using System.Net;
using Microsoft.Extensions.Options;
using MQTTnet.Protocol;
using MQTTnet.Server;
using OrleansPush.Gateway.Connections;
using OrleansPush.Gateway.Hosting;
using OrleansPush.Gateway.Observability;
using OrleansPush.Gateway.Routing;

namespace OrleansPush.Gateway.Transports.Mqtt;

/// <summary>
/// Puts the MQTT broker in front of the push cluster: the broker speaks MQTT (3.1.1 and 5, TCP and WebSocket, keep
/// alive, QoS handshakes), and every decision is ours, through <see cref="ConnectionCommands"/>:
/// <list type="bullet">
/// <item>SUBSCRIBE to a topic filter is a topic subscribe; a wildcard filter (<c>+</c>, <c>#</c>) is served by
/// <see cref="MqttWildcards"/> where its namespace allows wildcards, and refused with reason "wildcard subscriptions
/// not supported" (0xA2; MQTT 3.1.1 clients see failure 0x80) elsewhere. QoS 0, 1 and 2 are granted as asked.</item>
/// <item>PUBLISH is a client publish (where the namespace allows it). The broker never routes a PUBLISH itself: the
/// message goes to its topic grain, is sequenced, and comes back to every subscriber on every transport, MQTT
/// included, exactly once. Deliveries are handed to sessions directly and never pass through here, so nothing loops.
/// A QoS 1 PUBLISH is acknowledged (a QoS 2 one: PUBREC) after the message is durably sequenced; a QoS 2 PUBLISH sent
/// again before its PUBREL is acknowledged without being published twice. A refused one is not published: MQTT 5 gets
/// a reason code; MQTT 3.1.1, which has none, is disconnected (audited and counted) rather than acknowledged.</item>
/// <item>Wills are taken out of the CONNECT (<see cref="MqttClientChannel"/>) and published here, through the ordinary
/// publish path with the client's own permissions, when the client goes without DISCONNECT (MQTT 5: or with reason
/// 0x04), after the MQTT 5 will delay; a reconnect with the same client id within the delay cancels it.</item>
/// <item>CONNECT passes the same <see cref="ConnectionDoor"/> as every transport (see <see cref="AuthenticateAsync"/>);
/// the connection is registered and torn down by <see cref="ConnectionCommands"/> like any other.</item>
/// </list>
/// An MQTT client gets only what it subscribes to: its personal channel is <c>user:{id}</c>, subscribed explicitly.
/// </summary>
internal sealed class MqttBridge : IDisposable
{
    private const string InfoKey = "orleanspush.mqtt";
    private readonly ConnectionCommands _commands;
    private readonly MqttWildcards _wildcards;
    private const string Transport = MqttConnection.TransportName;
    private readonly ConnectionDoor _door;
    private readonly Security.TokenValidator _validator;
    private readonly Security.ConnectionSecurity _security;
    private readonly GatewayOptions _gateway;
    private readonly MqttOptions _options;
    private readonly TopicOptions _topics;
    private readonly TimeProvider _time;
    private readonly ILogger<MqttBridge> _logger;
    private readonly ConcurrentDictionary<string, MqttConnection> _connections = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, GoneSession> _gone = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, CancellationTokenSource> _delayedWills = new(StringComparer.Ordinal);
    private readonly Lock _lifecycle = new();
    private readonly ITimer _goneSweeper;
    private MqttServer? _server;

    public MqttBridge(ConnectionCommands commands, MqttWildcards wildcards, ConnectionDoor door, Security.TokenValidator validator,
        Security.ConnectionSecurity security, IOptions<GatewayOptions> gateway, IOptions<MqttOptions> options,
        IOptions<TopicOptions> topics, TimeProvider time, ILogger<MqttBridge> logger)
    {
        _commands = commands;
        _wildcards = wildcards;
        _door = door;
        _validator = validator;
        _security = security;
        _gateway = gateway.Value;
        _options = options.Value;
        _topics = topics.Value;
        _time = time;
        _logger = logger;

        // Kept positions are bounded by age as well as by count: a quarter of the window after it ends, at most.
        var sweep = TimeSpan.FromTicks(Math.Clamp(_options.SessionResumeWindow.Ticks / 4, TimeSpan.TicksPerSecond, TimeSpan.TicksPerMinute));
        _goneSweeper = time.CreateTimer(static state => ((MqttBridge)state!).ForgetLapsedSessions(), this, sweep, sweep);
    }

    public void Dispose() => _goneSweeper.Dispose();

    public int Count => _connections.Count;

    /// <summary>Persistent sessions whose positions are kept for a resume.</summary>
    internal int ResumableSessions => _gone.Count;

    /// <summary>Whether the session of <paramref name="clientId"/>, gone, is kept for a resume.</summary>
    internal bool KeepsSessionOf(string clientId) => _gone.ContainsKey(clientId);

    public void Attach(MqttServer server)
    {
        _server = server;
        server.ValidatingConnectionAsync += AuthenticateAsync;
        server.ClientConnectedAsync += OnConnectedAsync;
        server.ClientDisconnectedAsync += OnDisconnectedAsync;
        server.InterceptingSubscriptionAsync += OnSubscribeAsync;
        server.InterceptingUnsubscriptionAsync += OnUnsubscribeAsync;
        server.InterceptingPublishAsync += OnPublishAsync;
        server.ClientAcknowledgedPublishPacketAsync += OnAcknowledgedAsync;
        server.InterceptingInboundPacketAsync += OnInboundPacketAsync;
    }

    /// <summary>CONNECT passes the <see cref="ConnectionDoor"/> like every other transport's connection: drain, handshake
    /// rate, token, connections per user and per IP (the origin of MQTT over WebSocket was checked on its HTTP request).
    /// With a signing key configured, the password is the JWT: the user id is its <c>sub</c> and its claims govern every
    /// subscribe and publish; to refresh, reconnect with a new token. In open mode the user name, when given, is the user
    /// id (like <c>?user=</c>). A refusal is audited by the door and answered with the CONNACK reason of its code. The
    /// password is never logged.</summary>
    private async Task AuthenticateAsync(ValidatingConnectionEventArgs e)
    {
        var remote = Remote(e.RemoteEndPoint);
        string? openUser = null;
        if (!_door.Secured && _gateway.AllowUserQueryParameter && !string.IsNullOrEmpty(e.UserName))
        {
            if (!TopicName.IsValidUserId(e.UserName))
            {
                e.ReasonCode = MqttConnectReasonCode.BadUserNameOrPassword;
                e.ReasonString = "A user id is 1-195 characters of A-Z a-z 0-9 _ - . / @ (no ':').";
                return;
            }

            openUser = e.UserName;
        }

        var (admitted, refusal) = await _door.AdmitAsync(new AdmissionRequest(
            Transport, remote, Origin: null, Handshake: true, () => _validator.ValidateAsync(e.Password), openUser,
            () => (MqttWebSocketRequest.Current ?? new Proxies.ConnectProxyRequest(Transport, null)) with
            {
                RemoteAddress = remote,
                Mqtt = new Proxies.MqttCredentials(e.ClientId, e.UserName, e.Password),
            }));
        if (admitted is null)
        {
            e.ReasonCode = refusal!.Code switch
            {
                WireCodes.Unauthorized => MqttConnectReasonCode.BadUserNameOrPassword,
                WireCodes.Forbidden => MqttConnectReasonCode.NotAuthorized,
                WireCodes.RateLimited => MqttConnectReasonCode.QuotaExceeded,
                WireCodes.Unavailable => MqttConnectReasonCode.ServerUnavailable,
                _ => MqttConnectReasonCode.UnspecifiedError,
            };
            e.ReasonString = $"{refusal.Code}: {refusal.Message}";
            return;
        }

        var mqtt5 = e.ProtocolVersion == MQTTnet.Formatter.MqttProtocolVersion.V500;
        if (string.IsNullOrEmpty(e.ClientId) && mqtt5)
        {
            // MQTT 5: the CONNACK carries it (Assigned Client Identifier). An MQTT 3.1.1 client with a clean session was
            // given one before the broker read its CONNECT (MqttClientChannel); without one it is refused.
            e.AssignedClientIdentifier = MqttClientChannel.NewClientId();
        }

        var channel = e.ChannelAdapter as MqttClientChannel;
        if (channel is not null && e.CleanSession == false && HasSession(e.ClientId, admitted.UserId))
        {
            channel.SessionPresent = true;
        }

        var will = channel?.Will;
        e.SessionItems[InfoKey] = new ClientInfo(admitted.UserId, e.CleanSession == false, remote, admitted.Access, admitted.Slots, mqtt5, will,
            mqtt5 ? e.MaximumPacketSize : 0, mqtt5 ? e.ReceiveMaximum : (ushort)0, SessionExpiry(mqtt5 ? e.SessionExpiryInterval : null, e.CleanSession == false));
    }

    private async Task OnConnectedAsync(ClientConnectedEventArgs e)
    {
        if (e.SessionItems[InfoKey] is not ClientInfo info)
        {
            // Never admitted (cannot happen: CONNECT is validated first); do not serve it.
            await DisconnectClientAsync(e.ClientId, WireCodes.Unavailable);
            return;
        }

        e.SessionItems.Remove(InfoKey);
        var connection = new MqttConnection(e.ClientId, e.RemoteEndPoint?.ToString(), info.UserId, info.Remote, info.Persistent,
            _gateway.Outbound, DisconnectAsync)
        {
            Access = info.Access,
            Mqtt5 = info.Mqtt5,
            Will = info.Will,
            Time = _time,
            SessionExpiry = info.SessionExpiry,
            MaximumPacketSize = info.MaximumPacketSize,
            ReceiveMaximum = info.ReceiveMaximum,
        };
        if (_delayedWills.TryRemove(e.ClientId, out var delayedWill))
        {
            // Back within its will delay: the will is not published (MQTT 5 §3.1.2.5).
            delayedWill.Cancel();
        }

        connection.HoldSlots(info.Slots);
        MqttConnection? previous;
        lock (_lifecycle)
        {
            // The same client id connected again before the broker reported the old connection gone (a takeover):
            // the old one is finished now, so that the new one resumes from where it stopped.
            if (_connections.TryRemove(e.ClientId, out previous))
            {
                KeepPositions(previous);
            }

            if (info.Persistent && _gone.TryGetValue(e.ClientId, out var gone) && gone.UserId == info.UserId)
            {
                connection.ResumeReleases(gone.PendingReleases);
            }

            _connections[e.ClientId] = connection;
        }

        if (previous is not null)
        {
            Forget(previous);
        }

        // An MQTT client receives only what it subscribed to: attached to its user, without automatic subscriptions
        // (a persistent session's own come back with it).
        try
        {
            await _commands.OnConnectedAsync(connection, Registration.Attached);
            if (!info.Persistent)
            {
                _gone.TryRemove(e.ClientId, out _); // clean session: the old session's state is discarded
            }
            else if (GoneSessionOf(e.ClientId, info.UserId) is { Filters.Length: > 0 } gone)
            {
                await RestoreSubscriptionsAsync(connection, gone);
            }
        }
        catch (Exception ex)
        {
            if (ex is not PushRejectedException)
            {
                GatewayLog.RequestFailed(_logger, connection.Id, ex);
            }

            connection.Close(WireCodes.Unavailable);
        }
    }

    private Task OnDisconnectedAsync(ClientDisconnectedEventArgs e)
    {
        MqttConnection? connection;
        lock (_lifecycle)
        {
            // The remote end point (address and port) tells this connection from a newer one with the same client id.
            if (!_connections.TryGetValue(e.ClientId, out connection) || connection.Endpoint != e.RemoteEndPoint?.ToString()
                || !_connections.TryRemove(new KeyValuePair<string, MqttConnection>(e.ClientId, connection)))
            {
                return Task.CompletedTask;
            }

            if (connection.Mqtt5 && e.SessionExpiryInterval > 0 && connection.SessionExpiry > TimeSpan.Zero)
            {
                // MQTT 5 §3.14.2.2.2: the DISCONNECT may change it (MQTTnet reads an interval of 0 there as none given).
                connection.SessionExpiry = SessionExpiry(e.SessionExpiryInterval, persistent: true);
            }

            KeepPositions(connection);
        }

        var willDue = connection.Will is not null
            && (e.DisconnectType == MqttClientDisconnectType.NotClean || e.ReasonCode == MqttDisconnectReasonCode.DisconnectWithWillMessage);
        if (!willDue)
        {
            Forget(connection);
            return Task.CompletedTask;
        }

        return PublishWillAsync(connection);
    }

    /// <summary>Publishes the will of a client gone without DISCONNECT, with the client's own permissions, at once or
    /// after its delay (unless the client id connects again meanwhile). A refused will is logged, never published.</summary>
    private async Task PublishWillAsync(MqttConnection connection)
    {
        var will = connection.Will!;
        if (will.Delay <= TimeSpan.Zero)
        {
            await PublishWillNowAsync(connection, will);
            Forget(connection);
            return;
        }

        Forget(connection);
        var cancel = new CancellationTokenSource();
        if (_delayedWills.TryGetValue(connection.ClientId, out var older))
        {
            older.Cancel();
        }

        _delayedWills[connection.ClientId] = cancel;
        _ = Task.Run(async () =>
        {
            try
            {
                await Task.Delay(will.Delay, _time, cancel.Token);
            }
            catch (OperationCanceledException)
            {
                return;
            }

            if (_delayedWills.TryRemove(new KeyValuePair<string, CancellationTokenSource>(connection.ClientId, cancel)))
            {
                await PublishWillNowAsync(connection, will);
            }
        });
    }

    private async Task PublishWillNowAsync(MqttConnection connection, MqttWill will)
    {
        try
        {
            await PublishAsync(connection, will.Topic, new ReadOnlySequence<byte>(will.Payload), will.Retain, will.Properties);
        }
        catch (PushRejectedException rejected)
        {
            GatewayMetrics.PublishRefused(Transport, rejected.Code);
            MqttLog.WillRefused(_logger, connection.ClientId, will.Topic, rejected.Code);
        }
        catch (Exception ex)
        {
            GatewayLog.RequestFailed(_logger, connection.Id, ex);
        }
    }

    /// <summary>Keeps where a persistent-session client was in each topic, for its next connection (under
    /// <see cref="_lifecycle"/>, so that a reconnect's subscribe never runs between the removal and this).</summary>
    private void KeepPositions(MqttConnection connection)
    {
        var positions = connection.Positions();
        var pending = connection.PendingReleases();
        var filters = connection.Filters();
        if (connection.SessionExpiry <= TimeSpan.Zero || (positions.Count == 0 && pending.Length == 0 && filters.Length == 0))
        {
            _gone.TryRemove(connection.ClientId, out _); // the session ends with this connection (a resumed one too)
            return;
        }

        var now = _time.GetUtcNow();
        if (_gone.Count >= _options.MaxResumableSessions)
        {
            ForgetLapsedSessions();
        }

        if (_gone.Count < _options.MaxResumableSessions)
        {
            _gone[connection.ClientId] = new GoneSession(connection.UserId, now + connection.SessionExpiry,
                positions.ToDictionary(p => p.Topic, p => p.Since, StringComparer.Ordinal), pending, filters);
        }
        else
        {
            MqttLog.ResumeDropped(_logger, connection.ClientId);
        }
    }

    private void ForgetLapsedSessions()
    {
        var now = _time.GetUtcNow();
        foreach (var (id, old) in _gone)
        {
            if (old.Until <= now)
            {
                _gone.TryRemove(new KeyValuePair<string, GoneSession>(id, old));
            }
        }
    }

    private void Forget(MqttConnection connection)
    {
        _wildcards.Remove(connection);
        _commands.OnDisconnected(connection);
        connection.Disconnected();
        if (connection.CloseReason is { } reason)
        {
            GatewayLog.ConnectionClosed(_logger, connection.Id, connection.Transport, connection.RemoteAddress, reason);
        }
    }

    private async Task OnSubscribeAsync(InterceptingSubscriptionEventArgs e)
    {
        // The broker keeps no subscription table of its own: it never routes a message (see OnPublishAsync).
        e.ProcessSubscription = false;
        if (!_connections.TryGetValue(e.ClientId, out var connection))
        {
            Refuse(e, MqttSubscribeReasonCode.UnspecifiedError, "unavailable: the connection is closing.");
            return;
        }

        if (!_security.TryAcceptMessage(connection))
        {
            Refuse(e, MqttSubscribeReasonCode.QuotaExceeded, "rate_limited: too many requests; slow down.");
            return;
        }

        connection.Attach(e.Session);

        // The options first: the subscribe may send the topics' latest values at once, and retain handling 2 says none.
        connection.SetFilterOptions(e.TopicFilter.Topic, e.TopicFilter.NoLocal, e.TopicFilter.RetainAsPublished, connection.PendingSubscriptionIdentifier,
            noRetained: e.TopicFilter.RetainHandling == MqttRetainHandling.DoNotSendOnSubscribe);
        var again = connection.HasFilter(e.TopicFilter.Topic);
        var (code, reason) = await SubscribeFilterAsync(connection, e.TopicFilter.Topic, e.TopicFilter.QualityOfServiceLevel);
        if (reason is null)
        {
            e.Response.ReasonCode = code;
            if (again && e.TopicFilter.RetainHandling == MqttRetainHandling.SendAtSubscribe)
            {
                // The subscription stood already, so nothing new was subscribed: its retained messages are sent again,
                // queued before the SUBACK goes (as a first subscribe's are).
                await ResendRetainedAsync(connection, e.TopicFilter.Topic);
            }
        }
        else
        {
            if (!connection.HasFilter(e.TopicFilter.Topic))
            {
                connection.SetFilterOptions(e.TopicFilter.Topic, false, false, 0);
            }

            Refuse(e, code, reason);
        }
    }

    private async Task ResendRetainedAsync(MqttConnection connection, string filter)
    {
        var topics = MqttWildcards.IsWildcard(filter) ? connection.ClientTopics().Where(t => MqttWildcards.Matches(t, filter)) : [filter];
        foreach (var topic in topics)
        {
            try
            {
                await _commands.ResendLatestAsync(connection, topic);
            }
            catch (Exception ex)
            {
                GatewayLog.RequestFailed(_logger, connection.Id, ex);
            }
        }
    }

    /// <summary>Subscribes <paramref name="filter"/> (a topic, or a wildcard filter through <see cref="MqttWildcards"/>) at
    /// <paramref name="qos"/>; a persistent session resumes each topic from where it was. The SUBACK code, and a reason
    /// when refused.</summary>
    private async Task<(MqttSubscribeReasonCode Code, string? Reason)> SubscribeFilterAsync(MqttConnection connection, string filter, MqttQualityOfServiceLevel qos,
        bool restoring = false)
    {
        var wildcard = MqttWildcards.IsWildcard(filter);
        if (wildcard && _wildcards.Refusal(filter) is { } refusal)
        {
            return refusal;
        }

        var granted = qos switch
        {
            MqttQualityOfServiceLevel.AtMostOnce => MqttSubscribeReasonCode.GrantedQoS0,
            MqttQualityOfServiceLevel.AtLeastOnce => MqttSubscribeReasonCode.GrantedQoS1,
            _ => MqttSubscribeReasonCode.GrantedQoS2,
        };
        Func<string, Since?>? resume = connection.PersistentSession ? topic => ResumePointOf(connection, topic) : null;
        if (wildcard)
        {
            try
            {
                await _wildcards.SubscribeAsync(connection, filter, qos, resume, restoring);
                connection.AddFilter(filter, qos);
                return (granted, null);
            }
            catch (Exception ex)
            {
                _wildcards.Unsubscribe(connection, filter);
                GatewayLog.RequestFailed(_logger, connection.Id, ex);
                return (MqttSubscribeReasonCode.UnspecifiedError, "unavailable: the subscribe failed; try again.");
            }
        }

        if (connection.HasFilter(filter) && connection.Follows(filter))
        {
            // Restored with the session (or subscribed again): the subscription stands, at the QoS asked now.
            connection.SetQos(filter, qos);
            connection.AddFilter(filter, qos);
            return (granted, null);
        }

        var since = resume?.Invoke(filter);
        connection.Subscribing(filter, qos, since);
        try
        {
            var subscribing = _commands.BeginSubscribe(connection, filter, since, 0);
            if (since is null)
            {
                // SUBACK once the subscription's start is known (after the topic's latest value, where it keeps one,
                // was queued): a persistent session that leaves right after keeps that position, and gets what is
                // published while it is away when it comes back.
                connection.Subscribed(filter, await subscribing.Completed);
            }
            else
            {
                // SUBACK once the resume is recorded: it then replays at the pace the client takes it (flow-controlled
                // by this connection's queue), however long that is.
                await subscribing.AdmittedAsync();
                _ = FollowResumeAsync(connection, filter, since, subscribing.Completed);
            }

            connection.AddFilter(filter, qos);
            return (granted, null);
        }
        catch (PushRejectedException rejected)
        {
            connection.Unsubscribed(filter);
            return (rejected.Code switch
            {
                WireCodes.BadTopic => MqttSubscribeReasonCode.TopicFilterInvalid,
                WireCodes.Forbidden or WireCodes.Unauthorized => MqttSubscribeReasonCode.NotAuthorized,
                WireCodes.RateLimited => MqttSubscribeReasonCode.QuotaExceeded,
                _ => MqttSubscribeReasonCode.UnspecifiedError,
            }, $"{rejected.Code}: {rejected.Message}");
        }
        catch (Exception ex)
        {
            connection.Unsubscribed(filter);
            if (!(ex is OperationCanceledException && connection.Gone.IsCancellationRequested))
            {
                // (A subscribe the client's own leaving cut short is not a failure to report.)
                GatewayLog.RequestFailed(_logger, connection.Id, ex);
            }

            return (MqttSubscribeReasonCode.UnspecifiedError, "unavailable: the subscribe failed; try again.");
        }
    }

    /// <summary>A persistent session came back (same client id and user, within <see cref="MqttOptions.SessionResumeWindow"/>):
    /// its subscriptions are made again at once, each topic from where the client was, as an MQTT broker keeps a session's
    /// subscriptions (CONNACK said session present).</summary>
    private async Task RestoreSubscriptionsAsync(MqttConnection connection, GoneSession gone)
    {
        if (_server is not { } server)
        {
            return;
        }

        try
        {
            connection.Attach(await server.GetSessionAsync(connection.ClientId));
        }
        catch (InvalidOperationException)
        {
            return; // gone again meanwhile
        }

        foreach (var (filter, qos) in gone.Filters)
        {
            var (_, reason) = await SubscribeFilterAsync(connection, filter, qos, restoring: true);
            if (reason is not null)
            {
                MqttLog.RestoreRefused(_logger, connection.ClientId, filter, reason);
            }
        }
    }

    /// <summary>When a resumed subscription is live (its replay queued): where the client starts, and a resume that could
    /// not be complete is logged (MQTT has no word for it).</summary>
    private async Task FollowResumeAsync(MqttConnection connection, string filter, Since since, Task<SubscribeResult> completed)
    {
        try
        {
            var result = await completed;
            connection.Subscribed(filter, result);
            if (result.Recovered == false)
            {
                MqttLog.ResumeNotRecovered(_logger, connection.ClientId, filter, since.Seq, result.Epoch, result.Seq);
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or PushRejectedException)
        {
            // Unsubscribed or gone meanwhile.
        }
    }

    private static void Refuse(InterceptingSubscriptionEventArgs e, MqttSubscribeReasonCode code, string reason)
    {
        e.ProcessSubscription = false;
        e.Response.ReasonCode = code;
        e.ReasonString = reason;
    }

    /// <summary>Whether a persistent connect of <paramref name="clientId"/> by <paramref name="userId"/> finds its session:
    /// kept since it left, or still held by its previous connection (whose end the broker has not reported yet; it is
    /// taken over, see <see cref="OnConnectedAsync"/>). Under <see cref="_lifecycle"/>, which moves one to the other.</summary>
    private bool HasSession(string clientId, string? userId)
    {
        lock (_lifecycle)
        {
            return GoneSessionOf(clientId, userId) is { Filters.Length: > 0 }
                || (_connections.TryGetValue(clientId, out var live) && live.SessionExpiry > TimeSpan.Zero && live.UserId == userId && live.Filters().Length > 0);
        }
    }

    /// <summary>The resumable session a connect of <paramref name="clientId"/> by <paramref name="userId"/> finds, if any.</summary>
    private GoneSession? GoneSessionOf(string clientId, string? userId) =>
        _gone.TryGetValue(clientId, out var gone) && gone.Until > _time.GetUtcNow() && gone.UserId == userId ? gone : null;

    private Since? ResumePointOf(MqttConnection connection, string topic)
    {
        lock (_lifecycle)
        {
            return ResumePointOfLocked(connection, topic);
        }
    }

    private Since? ResumePointOfLocked(MqttConnection connection, string topic)
    {
        if (!_gone.TryGetValue(connection.ClientId, out var gone))
        {
            return null;
        }

        if (gone.Until <= _time.GetUtcNow() || gone.UserId != connection.UserId)
        {
            _gone.TryRemove(new KeyValuePair<string, GoneSession>(connection.ClientId, gone));
            return null;
        }

        return gone.Topics.Remove(topic, out var since) ? since : null;
    }

    private Task OnUnsubscribeAsync(InterceptingUnsubscriptionEventArgs e)
    {
        e.ProcessUnsubscription = false;
        if (_connections.TryGetValue(e.ClientId, out var connection))
        {
            try
            {
                connection.RemoveFilter(e.Topic);
                if (MqttWildcards.IsWildcard(e.Topic))
                {
                    _wildcards.Unsubscribe(connection, e.Topic);
                    e.Response.ReasonCode = MqttUnsubscribeReasonCode.Success;
                    return Task.CompletedTask;
                }

                _commands.Unsubscribe(connection, e.Topic);
                connection.Unsubscribed(e.Topic);
                e.Response.ReasonCode = MqttUnsubscribeReasonCode.Success;
            }
            catch (PushRejectedException rejected)
            {
                e.Response.ReasonCode = MqttUnsubscribeReasonCode.TopicFilterInvalid;
                e.Response.ReasonString = $"{rejected.Code}: {rejected.Message}";
            }
        }

        return Task.CompletedTask;
    }

    private async Task OnPublishAsync(InterceptingPublishEventArgs e)
    {
        // Every message is sequenced by its topic grain and comes back through the fan-out; the broker routes nothing.
        e.ProcessPublish = false;
        if (!_connections.TryGetValue(e.ClientId, out var connection))
        {
            // Injected by the server itself (none are) or from a connection already gone: nothing to publish.
            return;
        }

        if (connection.TakeDuplicate())
        {
            // A QoS 2 message sent again before its PUBREL: published once already, acknowledged again (PUBREC).
            e.Response.ReasonCode = MqttPubAckReasonCode.Success;
            return;
        }

        try
        {
            var message = e.ApplicationMessage;
            if (string.IsNullOrEmpty(message.Topic) && connection.Mqtt5)
            {
                // A Topic Alias this connection never set (aliases end with their connection): a protocol error, §3.3.2.3.4.
                e.Response.ReasonCode = MqttPubAckReasonCode.TopicNameInvalid;
                _ = DisconnectClientAsync(connection.ClientId, MqttDisconnectReasonCode.TopicAliasInvalid, "bad_topic: unknown topic alias.");
                return;
            }

            if (!_security.TryAcceptMessage(connection))
            {
                throw new PushRejectedException(WireCodes.RateLimited, "Too many messages; slow down.");
            }

            var properties = MqttMessageProperties.Encode(message, connection.NoLocalFor(message.Topic) ? connection.ClientId : null);
            await PublishAsync(connection, message.Topic, message.Payload, message.Retain, properties);
            e.Response.ReasonCode = MqttPubAckReasonCode.Success;
        }
        catch (PushRejectedException rejected)
        {
            Refused(e, connection, rejected.Code);
            e.Response.ReasonCode = rejected.Code switch
            {
                WireCodes.BadTopic => MqttPubAckReasonCode.TopicNameInvalid,
                WireCodes.Forbidden or WireCodes.Unauthorized => MqttPubAckReasonCode.NotAuthorized,
                WireCodes.TooLarge or WireCodes.BadRequest => MqttPubAckReasonCode.PayloadFormatInvalid,
                WireCodes.RateLimited => MqttPubAckReasonCode.QuotaExceeded,
                _ => MqttPubAckReasonCode.UnspecifiedError,
            };
            e.Response.ReasonString = $"{rejected.Code}: {rejected.Message}";
        }
        catch (Exception ex)
        {
            GatewayLog.RequestFailed(_logger, connection.Id, ex);
            Refused(e, connection, WireCodes.Unavailable);
            e.Response.ReasonCode = MqttPubAckReasonCode.UnspecifiedError;
            e.Response.ReasonString = "unavailable: the message was not published; try again.";
        }
    }

    /// <summary>A publish that was not published is never acknowledged as if it were: MQTT 5 hears the reason code; an
    /// MQTT 3.1.1 client, whose PUBACK cannot refuse, is disconnected (its spec's other permitted answer, §3.3.5), and
    /// that is audited.</summary>
    private void Refused(InterceptingPublishEventArgs e, MqttConnection connection, string code)
    {
        var topic = e.ApplicationMessage.Topic ?? string.Empty;
        MqttLog.PublishRefused(_logger, connection.Id, topic, code);
        GatewayMetrics.PublishRefused(Transport, code);
        if (!connection.Mqtt5)
        {
            e.CloseConnection = true;
            _security.Audit.PublishRefusedConnectionClosed(connection.UserId, topic, code, Transport, connection.RemoteAddress);
        }
    }

    /// <summary>Publishes a client's message (a PUBLISH or its will) through the ordinary publish path; throws
    /// <see cref="PushRejectedException"/> when it is refused.</summary>
    private async Task PublishAsync(MqttConnection connection, string topic, ReadOnlySequence<byte> payload, bool retain, byte[]? properties)
    {
        if (retain && (!TopicName.IsValid(topic) || !_topics.For(topic).KeepsLatestValue))
        {
            // A retained message is the topic's latest value, kept only where the namespace keeps one (Retain: retained
            // publishes set it; KeepLatest: every publish does). Elsewhere subscribers resume from history instead.
            throw new PushRejectedException(WireCodes.BadRequest, "Retained messages are kept only in namespaces with Retain or KeepLatest; elsewhere subscribers resume from history instead.");
        }

        // MQTT payloads are bytes: one UTF-8 JSON value is published as JSON (so JSON clients get it as data),
        // anything else as binary; MQTT subscribers get the same bytes either way.
        var bytes = payload.IsSingleSegment ? payload.First : payload.ToArray();
        var format = JsonPayload.IsOneValue(bytes.Span) ? PayloadFormat.Json : PayloadFormat.Binary;
        await _commands.PublishAsync(connection, topic, bytes, format, properties, retain);
    }

    /// <summary>Sees each inbound packet before the broker handles it: QoS 2 packet ids (see
    /// <see cref="MqttConnection.Qos2Received"/>).</summary>
    private Task OnInboundPacketAsync(InterceptingPacketEventArgs e)
    {
        if (e.Packet is MQTTnet.Packets.MqttPublishPacket { QualityOfServiceLevel: MqttQualityOfServiceLevel.ExactlyOnce } publish
            && _connections.TryGetValue(e.ClientId, out var connection))
        {
            connection.Qos2Received(publish.PacketIdentifier);
        }
        else if (e.Packet is MQTTnet.Packets.MqttPubRelPacket release && _connections.TryGetValue(e.ClientId, out var releasing))
        {
            releasing.Qos2Released(release.PacketIdentifier);
        }
        else if (e.Packet is MQTTnet.Packets.MqttSubscribePacket subscribe && _connections.TryGetValue(e.ClientId, out var subscriber))
        {
            subscriber.PendingSubscriptionIdentifier = subscribe.SubscriptionIdentifier;
        }

        return Task.CompletedTask;
    }

    private Task OnAcknowledgedAsync(ClientAcknowledgedPublishPacketEventArgs e)
    {
        if (e.IsCompleted && _connections.TryGetValue(e.ClientId, out var connection))
        {
            connection.Acknowledged(e.PublishPacket.Topic);
        }

        return Task.CompletedTask;
    }

    private async Task DisconnectAsync(MqttConnection connection, string reason)
    {
        if (!_connections.TryGetValue(connection.ClientId, out var current) || current != connection)
        {
            return;
        }

        await DisconnectClientAsync(connection.ClientId, reason);
    }

    private Task DisconnectClientAsync(string clientId, string reason) => DisconnectClientAsync(clientId, reason switch
    {
        WireCodes.Shutdown => MqttDisconnectReasonCode.ServerShuttingDown,
        WireCodes.InsufficientState or WireCodes.Unavailable => MqttDisconnectReasonCode.UnspecifiedError,
        WireCodes.Unauthorized or WireCodes.Forbidden => MqttDisconnectReasonCode.NotAuthorized,
        WireCodes.Disconnected => MqttDisconnectReasonCode.AdministrativeAction,
        _ => MqttDisconnectReasonCode.QuotaExceeded,
    }, reason);

    private async Task DisconnectClientAsync(string clientId, MqttDisconnectReasonCode code, string reason)
    {
        if (_server is not { } server)
        {
            return;
        }

        try
        {
            await server.DisconnectClientAsync(clientId, new MqttServerClientDisconnectOptions { ReasonCode = code, ReasonString = reason });
        }
        catch (Exception ex) when (ex is InvalidOperationException or ObjectDisposedException or OperationCanceledException)
        {
            // Already gone.
        }
    }

    /// <summary>How long a client's session outlives its connection: MQTT 3.1.1 with clean session off, and MQTT 5 with a
    /// Session Expiry Interval (whatever clean start says, §3.1.2.11.2), at most <see cref="MqttOptions.SessionResumeWindow"/>.</summary>
    private TimeSpan SessionExpiry(uint? mqtt5Interval, bool persistent)
    {
        var window = _options.SessionResumeWindow;
        return mqtt5Interval is { } seconds ? TimeSpan.FromSeconds(Math.Min(seconds, window.TotalSeconds)) : persistent ? window : TimeSpan.Zero;
    }

    private static string? Remote(EndPoint? endPoint) => endPoint switch
    {
        IPEndPoint ip => ip.Address.ToString(),
        null => null,
        _ => endPoint.ToString(),
    };

    /// <summary>What CONNECT established, kept in the broker's session items for the connected event.</summary>
    private sealed record ClientInfo(string? UserId, bool Persistent, string? Remote, Security.ConnectionAccess Access, IDisposable Slots, bool Mqtt5,
        MqttWill? Will, uint MaximumPacketSize, ushort ReceiveMaximum, TimeSpan SessionExpiry);

    /// <summary>What a persistent session leaves for its next connection: per topic where it was, the QoS 2 packet ids it
    /// had sent and not yet released, and its subscriptions (filter and QoS).</summary>
    private sealed record GoneSession(string? UserId, DateTimeOffset Until, Dictionary<string, Since> Topics, ushort[] PendingReleases,
        (string Filter, MqttQualityOfServiceLevel Qos)[] Filters);
}

using System.Buffers;
using System.Collections.Concurrent;
using System.Net;
using Microsoft.Extensions.Options;
using MQTTnet.Protocol;
using MQTTnet.Server;
using OrleansPush.Gateway.Connections;
using OrleansPush.Gateway.Hosting;
using OrleansPush.Gateway.Routing;

namespace OrleansPush.Gateway.Transports.Mqtt;

/// <summary>
/// Puts the MQTT broker in front of the push cluster: the broker speaks MQTT (3.1.1 and 5, TCP and WebSocket, keep
/// alive, QoS handshakes), and every decision is ours, through <see cref="ConnectionCommands"/>:
/// <list type="bullet">
/// <item>SUBSCRIBE to a topic filter is a topic subscribe; wildcard filters (<c>+</c>, <c>#</c>) are refused with
/// reason "wildcard subscriptions not supported" (0xA2; MQTT 3.1.1 clients see failure 0x80). QoS 2 is granted as 1.</item>
/// <item>PUBLISH is a client publish (where the namespace allows it). The broker never routes a PUBLISH itself: the
/// message goes to its topic grain, is sequenced, and comes back to every subscriber on every transport, MQTT
/// included, exactly once. Deliveries are handed to sessions directly and never pass through here, so nothing loops.
/// A QoS 1 PUBLISH is acknowledged after the message is durably sequenced; a refused one gets a PUBACK reason code
/// (MQTT 5) and is not published.</item>
/// <item>The user name is the user id in open mode (as <c>?user=</c>); see <see cref="AuthenticateAsync"/> for the
/// token hook.</item>
/// </list>
/// An MQTT client gets only what it subscribes to: its personal channel is <c>user:{id}</c>, subscribed explicitly.
/// </summary>
internal sealed class MqttBridge
{
    private const string InfoKey = "orleanspush.mqtt";
    private const string ConnectionKey = "orleanspush.mqtt.connection";
    private readonly ConnectionCommands _commands;
    private readonly GatewayOptions _gateway;
    private readonly MqttOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger<MqttBridge> _logger;
    private readonly ConcurrentDictionary<string, MqttConnection> _connections = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, GoneSession> _gone = new(StringComparer.Ordinal);
    private MqttServer? _server;

    public MqttBridge(ConnectionCommands commands, IOptions<GatewayOptions> gateway, IOptions<MqttOptions> options, TimeProvider time, ILogger<MqttBridge> logger)
    {
        _commands = commands;
        _gateway = gateway.Value;
        _options = options.Value;
        _time = time;
        _logger = logger;
    }

    public int Count => _connections.Count;

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
    }

    /// <summary>CONNECT. Open mode: the user name, when given, is the user id (like <c>?user=</c>).
    /// <para>Security hook: when tokens land, the password carries the JWT; validate it here (refuse with
    /// <see cref="MqttConnectReasonCode.BadUserNameOrPassword"/>), take the user id from its <c>sub</c> claim and keep
    /// its claims in <see cref="ClientInfo"/> for the subscribe and publish checks. Never log the password.</para></summary>
    private Task AuthenticateAsync(ValidatingConnectionEventArgs e)
    {
        string? userId = null;
        if (_gateway.AllowUserQueryParameter && !string.IsNullOrEmpty(e.UserName))
        {
            if (!TopicName.IsValidUserId(e.UserName))
            {
                e.ReasonCode = MqttConnectReasonCode.BadUserNameOrPassword;
                e.ReasonString = "A user id is 1-195 characters of A-Z a-z 0-9 _ - . / @ (no ':').";
                return Task.CompletedTask;
            }

            userId = e.UserName;
        }

        if (string.IsNullOrEmpty(e.ClientId))
        {
            // MQTT 5 lets the server assign a client id; MQTTnet refuses an empty one from an MQTT 3.1.1 client
            // ("identifier rejected"), so those must send one (mosquitto_sub: -i).
            e.AssignedClientIdentifier = "orleanspush-" + Guid.NewGuid().ToString("N");
        }

        e.SessionItems[InfoKey] = new ClientInfo(userId, e.CleanSession == false, Remote(e.RemoteEndPoint));
        return Task.CompletedTask;
    }

    private Task OnConnectedAsync(ClientConnectedEventArgs e)
    {
        var info = e.SessionItems[InfoKey] as ClientInfo ?? new ClientInfo(null, false, Remote(e.RemoteEndPoint));
        var connection = new MqttConnection(e.ClientId, info.UserId, info.Remote, info.Persistent, _gateway.OutboundQueueBytes, _gateway.SlowCloseGrace, DisconnectAsync);
        if (_connections.TryGetValue(e.ClientId, out var previous))
        {
            // The same client id connected again before the broker reported the old connection gone (a takeover).
            _connections.TryRemove(new KeyValuePair<string, MqttConnection>(e.ClientId, previous));
        }

        _connections[e.ClientId] = connection;
        e.SessionItems[ConnectionKey] = connection;
        return Task.CompletedTask;
    }

    private Task OnDisconnectedAsync(ClientDisconnectedEventArgs e)
    {
        // Each connection has a session of its own (the broker keeps none across connections), so the session's item
        // names the connection that ended even when a newer one with the same client id has taken over.
        if (e.SessionItems[ConnectionKey] is MqttConnection connection)
        {
            _connections.TryRemove(new KeyValuePair<string, MqttConnection>(e.ClientId, connection));
            Forget(connection);
        }

        return Task.CompletedTask;
    }

    private void Forget(MqttConnection connection)
    {
        _commands.OnDisconnected(connection);
        connection.Disconnected();
        if (connection.PersistentSession && _options.SessionResumeWindow > TimeSpan.Zero && connection.Positions() is { Count: > 0 } positions)
        {
            var now = _time.GetUtcNow();
            if (_gone.Count >= _options.MaxResumableSessions)
            {
                foreach (var (id, old) in _gone)
                {
                    if (old.Until <= now)
                    {
                        _gone.TryRemove(id, out _);
                    }
                }
            }

            if (_gone.Count < _options.MaxResumableSessions)
            {
                _gone[connection.ClientId] = new GoneSession(connection.UserId, now + _options.SessionResumeWindow,
                    positions.ToDictionary(p => p.Topic, p => p.Since, StringComparer.Ordinal));
            }
            else
            {
                MqttLog.ResumeDropped(_logger, connection.ClientId);
            }
        }

        if (connection.CloseReason is { } reason)
        {
            GatewayLog.ConnectionClosed(_logger, connection.Id, connection.Transport, connection.RemoteAddress, reason);
        }
    }

    private async Task OnSubscribeAsync(InterceptingSubscriptionEventArgs e)
    {
        // The broker keeps no subscription table of its own: it never routes a message (see OnPublishAsync).
        e.ProcessSubscription = false;
        var filter = e.TopicFilter.Topic;
        if (!_connections.TryGetValue(e.ClientId, out var connection))
        {
            Refuse(e, MqttSubscribeReasonCode.UnspecifiedError, "unavailable: the connection is closing.");
            return;
        }

        if (filter.Contains('+', StringComparison.Ordinal) || filter.Contains('#', StringComparison.Ordinal))
        {
            Refuse(e, MqttSubscribeReasonCode.WildcardSubscriptionsNotSupported, "bad_topic: wildcard topic filters (+, #) are not supported; subscribe to each topic.");
            return;
        }

        connection.Attach(e.Session);
        var qos = e.TopicFilter.QualityOfServiceLevel == MqttQualityOfServiceLevel.AtMostOnce ? MqttQualityOfServiceLevel.AtMostOnce : MqttQualityOfServiceLevel.AtLeastOnce;
        var since = connection.PersistentSession ? ResumePointOf(connection, filter) : null;
        connection.Subscribing(filter, qos, since);
        try
        {
            var result = await _commands.SubscribeAsync(connection, filter, since, 0);
            connection.Subscribed(filter, result);
            if (since is not null && result.Recovered == false)
            {
                MqttLog.ResumeNotRecovered(_logger, connection.ClientId, filter, since.Seq, result.Epoch, result.Seq);
            }

            e.Response.ReasonCode = qos == MqttQualityOfServiceLevel.AtMostOnce ? MqttSubscribeReasonCode.GrantedQoS0 : MqttSubscribeReasonCode.GrantedQoS1;
        }
        catch (PushRejectedException rejected)
        {
            connection.Unsubscribed(filter);
            Refuse(e, rejected.Code switch
            {
                "bad_topic" => MqttSubscribeReasonCode.TopicFilterInvalid,
                "forbidden" or "unauthorized" => MqttSubscribeReasonCode.NotAuthorized,
                "rate_limited" => MqttSubscribeReasonCode.QuotaExceeded,
                _ => MqttSubscribeReasonCode.UnspecifiedError,
            }, $"{rejected.Code}: {rejected.Message}");
        }
        catch (Exception ex)
        {
            connection.Unsubscribed(filter);
            GatewayLog.RequestFailed(_logger, connection.Id, ex);
            Refuse(e, MqttSubscribeReasonCode.UnspecifiedError, "unavailable: the subscribe failed; try again.");
        }
    }

    private static void Refuse(InterceptingSubscriptionEventArgs e, MqttSubscribeReasonCode code, string reason)
    {
        e.ProcessSubscription = false;
        e.Response.ReasonCode = code;
        e.ReasonString = reason;
    }

    private Since? ResumePointOf(MqttConnection connection, string topic)
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

        lock (gone.Topics)
        {
            return gone.Topics.Remove(topic, out var since) ? since : null;
        }
    }

    private Task OnUnsubscribeAsync(InterceptingUnsubscriptionEventArgs e)
    {
        e.ProcessUnsubscription = false;
        if (_connections.TryGetValue(e.ClientId, out var connection))
        {
            try
            {
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

        try
        {
            var message = e.ApplicationMessage;
            if (message.Retain)
            {
                throw new PushRejectedException("bad_request", "Retained messages are not supported; subscribers resume from history instead.");
            }

            var payload = message.Payload;
            var json = payload.IsSingleSegment ? payload.First : payload.ToArray();
            await _commands.PublishAsync(connection, message.Topic, json);
            e.Response.ReasonCode = MqttPubAckReasonCode.Success;
        }
        catch (PushRejectedException rejected)
        {
            MqttLog.PublishRefused(_logger, connection.Id, e.ApplicationMessage.Topic, rejected.Code);
            e.Response.ReasonCode = rejected.Code switch
            {
                "bad_topic" => MqttPubAckReasonCode.TopicNameInvalid,
                "forbidden" or "unauthorized" => MqttPubAckReasonCode.NotAuthorized,
                "too_large" or "bad_request" => MqttPubAckReasonCode.PayloadFormatInvalid,
                "rate_limited" => MqttPubAckReasonCode.QuotaExceeded,
                _ => MqttPubAckReasonCode.UnspecifiedError,
            };
            e.Response.ReasonString = $"{rejected.Code}: {rejected.Message}";
        }
        catch (Exception ex)
        {
            GatewayLog.RequestFailed(_logger, connection.Id, ex);
            e.Response.ReasonCode = MqttPubAckReasonCode.UnspecifiedError;
            e.Response.ReasonString = "unavailable: the message was not published; try again.";
        }
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
        if (_server is not { } server || !_connections.TryGetValue(connection.ClientId, out var current) || current != connection)
        {
            return;
        }

        try
        {
            await server.DisconnectClientAsync(connection.ClientId, new MqttServerClientDisconnectOptions
            {
                ReasonCode = reason == "shutdown" ? MqttDisconnectReasonCode.ServerShuttingDown : MqttDisconnectReasonCode.QuotaExceeded,
                ReasonString = reason,
            });
        }
        catch (Exception ex) when (ex is InvalidOperationException or ObjectDisposedException or OperationCanceledException)
        {
            // Already gone.
        }
    }

    private static string? Remote(EndPoint? endPoint) => endPoint switch
    {
        IPEndPoint ip => ip.Address.ToString(),
        null => null,
        _ => endPoint.ToString(),
    };

    /// <summary>What CONNECT established, kept in the broker's session items for the connected event.</summary>
    private sealed record ClientInfo(string? UserId, bool Persistent, string? Remote);

    private sealed record GoneSession(string? UserId, DateTimeOffset Until, Dictionary<string, Since> Topics);
}

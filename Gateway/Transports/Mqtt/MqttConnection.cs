using System.Globalization;
using System.Text;
using MQTTnet;
using MQTTnet.Protocol;
using MQTTnet.Server;
using OrleansPush.Gateway.Connections;
using OrleansPush.Gateway.Routing;

namespace OrleansPush.Gateway.Transports.Mqtt;

/// <summary>What an MQTT connection queues: the shared application message and the position it carries.</summary>
internal readonly record struct MqttFrame(MqttApplicationMessage Message, string Topic, string Epoch, long Seq, bool Acknowledged);

/// <summary>
/// One MQTT client (TCP or WebSocket). Its bounded queue feeds the broker's session for the client; a message's MQTT
/// form (the publisher's JSON as payload) is built once per message and QoS level and shared by every MQTT subscriber.
/// <para>Per topic it remembers the last message the client has: for QoS 1 and 2 the last one it acknowledged (PUBACK,
/// PUBCOMP; they come in the order the PUBLISHes went out, MQTT 3.1.1 §4.6), for QoS 0 the last one handed to the broker. That position
/// outlives the connection (see <see cref="MqttBridge"/>), so a client with a persistent session that reconnects and
/// subscribes again is replayed what it had not acknowledged: an unacknowledged QoS 1 message is sent again, not
/// dropped.</para>
/// </summary>
internal sealed class MqttConnection : QueuedConnection<MqttFrame>
{
    /// <summary>At most this many messages sit in the broker's session queue unawaited; then the writer waits for
    /// the broker to send, so the bound that counts is this connection's own (in bytes).</summary>
    private const int AwaitEvery = 64;

    /// <summary>The transport's name (gauges, audit, logs).</summary>
    public const string TransportName = "mqtt";

    public static readonly WireForm<MqttForms> Message = new MessageForm();

    private readonly Dictionary<string, TopicState> _topics = new(StringComparer.Ordinal);
    private readonly Dictionary<string, MqttQualityOfServiceLevel> _filters = new(StringComparer.Ordinal);
    private readonly Func<MqttConnection, string, Task> _disconnect;
    private readonly CancellationTokenSource _gone = new();
    private readonly HashSet<ushort> _releasePending = [];
    private MqttSessionStatus? _session;
    private int _unawaited;
    private bool _duplicate;

    public MqttConnection(string clientId, string? endpoint, string? userId, string? remoteAddress, bool persistentSession, OutboundLimits limits,
        Func<MqttConnection, string, Task> disconnect)
        : base(TransportName, userId, remoteAddress, limits)
    {
        ClientId = clientId;
        Endpoint = endpoint;
        PersistentSession = persistentSession;
        _disconnect = disconnect;
        _ = RunWriterAsync(_gone.Token);
    }

    public string ClientId { get; }

    /// <summary>The client's address and port: tells this connection from a later one with the same client id.</summary>
    public string? Endpoint { get; }

    /// <summary>The client's session outlives this connection: clean session off, or (MQTT 5) a session expiry interval.</summary>
    public bool PersistentSession { get; }

    /// <summary>How long the session is kept after this connection ends (<see cref="MqttOptions.SessionResumeWindow"/>, or
    /// the MQTT 5 session expiry interval when shorter).</summary>
    public TimeSpan SessionKeptFor { get; init; }

    /// <summary>The client speaks MQTT 5 (which has reason codes in PUBACK and DISCONNECT).</summary>
    public bool Mqtt5 { get; init; }

    /// <summary>The will of its CONNECT, published if it goes without DISCONNECT.</summary>
    public MqttWill? Will { get; init; }

    /// <summary>An inbound QoS 2 PUBLISH arrived (before the broker handles it): a packet id already received and not yet
    /// released (PUBREL) is the same message sent again, and is not published twice (MQTT 3.1.1 §4.3.3).</summary>
    public void Qos2Received(ushort packetId)
    {
        lock (_releasePending)
        {
            _duplicate = !_releasePending.Add(packetId);
        }
    }

    /// <summary>PUBREL: the packet id may name a new message from now on.</summary>
    public void Qos2Released(ushort packetId)
    {
        lock (_releasePending)
        {
            _releasePending.Remove(packetId);
        }
    }

    /// <summary>Whether the PUBLISH being handled is a QoS 2 message already received (see <see cref="Qos2Received"/>);
    /// the broker handles one packet of a client at a time, so this belongs to the current one.</summary>
    public bool TakeDuplicate()
    {
        lock (_releasePending)
        {
            var duplicate = _duplicate;
            _duplicate = false;
            return duplicate;
        }
    }

    /// <summary>QoS 2 packet ids received and not yet released: kept for a persistent session's next connection.</summary>
    public ushort[] PendingReleases()
    {
        lock (_releasePending)
        {
            return [.. _releasePending];
        }
    }

    /// <summary>A persistent session resumed: its unreleased QoS 2 packet ids still name messages already published.</summary>
    public void ResumeReleases(IEnumerable<ushort> packetIds)
    {
        lock (_releasePending)
        {
            _releasePending.UnionWith(packetIds);
        }
    }

    /// <summary>Cancelled when the client has gone: ends the writer.</summary>
    public CancellationToken Gone => _gone.Token;

    /// <summary>The broker's session of this client: where messages are handed. Set before the first subscribe.</summary>
    public void Attach(MqttSessionStatus session) => Volatile.Write(ref _session, session);

    /// <summary>A subscribe is under way: messages of <paramref name="topic"/> go out at <paramref name="qos"/>, and
    /// the client is known to have everything up to <paramref name="since"/> (when resuming).</summary>
    public void Subscribing(string topic, MqttQualityOfServiceLevel qos, Since? since)
    {
        lock (_topics)
        {
            _topics[topic] = new TopicState(qos, since?.Epoch, since?.Seq ?? 0);
        }
    }

    /// <summary>The subscribe answered with the topic's position; without a usable resume point, that is where the
    /// client starts.</summary>
    public void Subscribed(string topic, SubscribeResult result)
    {
        lock (_topics)
        {
            if (_topics.TryGetValue(topic, out var state) && state.Epoch != result.Epoch)
            {
                state.Epoch = result.Epoch;
                state.Acked = state.Inflight.TryPeek(out var first) ? first - 1 : result.Seq;
            }
        }
    }

    public void Unsubscribed(string topic)
    {
        lock (_topics)
        {
            _topics.Remove(topic);
        }
    }

    /// <summary>Whether the connection has (or is making) a subscription to <paramref name="topic"/>.</summary>
    public bool Follows(string topic)
    {
        lock (_topics)
        {
            return _topics.ContainsKey(topic);
        }
    }

    /// <summary>The client subscribed <paramref name="filter"/> (a topic or a wildcard filter) at <paramref name="qos"/>:
    /// remembered for a persistent session's next connection.</summary>
    public void AddFilter(string filter, MqttQualityOfServiceLevel qos)
    {
        lock (_topics)
        {
            _filters[filter] = qos;
        }
    }

    public void RemoveFilter(string filter)
    {
        lock (_topics)
        {
            _filters.Remove(filter);
        }
    }

    public bool HasFilter(string filter)
    {
        lock (_topics)
        {
            return _filters.ContainsKey(filter);
        }
    }

    public (string Filter, MqttQualityOfServiceLevel Qos)[] Filters()
    {
        lock (_topics)
        {
            return [.. _filters.Select(f => (f.Key, f.Value))];
        }
    }

    /// <summary>A topic subscribed again: its messages go at <paramref name="qos"/> from now on.</summary>
    public void SetQos(string topic, MqttQualityOfServiceLevel qos)
    {
        lock (_topics)
        {
            if (_topics.TryGetValue(topic, out var state))
            {
                state.Qos = qos;
            }
        }
    }

    /// <summary>Another filter of the client matches <paramref name="topic"/>, which it already follows: its messages go
    /// once, at the highest QoS of the matching subscriptions (MQTT 3.1.1 §3.3.5).</summary>
    public void RaiseQos(string topic, MqttQualityOfServiceLevel qos)
    {
        lock (_topics)
        {
            if (_topics.TryGetValue(topic, out var state) && state.Qos < qos)
            {
                state.Qos = qos;
            }
        }
    }

    public MqttQualityOfServiceLevel QosOf(string topic)
    {
        lock (_topics)
        {
            return _topics.TryGetValue(topic, out var state) ? state.Qos : MqttQualityOfServiceLevel.AtMostOnce;
        }
    }

    /// <summary>The client acknowledged (PUBACK) the oldest unacknowledged QoS 1 message of <paramref name="topic"/> (a
    /// retained one, sent at SUBSCRIBE, is not counted).</summary>
    public void Acknowledged(string topic)
    {
        lock (_topics)
        {
            if (_topics.TryGetValue(topic, out var state) && state.Inflight.TryDequeue(out var seq))
            {
                state.Acked = seq;
            }
        }
    }

    /// <summary>Per topic: the QoS and the position up to which the client has everything.</summary>
    public IReadOnlyList<ResumePoint> Positions()
    {
        lock (_topics)
        {
            return [.. _topics.Where(t => t.Value.Epoch is not null).Select(t => new ResumePoint(t.Key, t.Value.Qos, new Since(t.Value.Epoch!, t.Value.Acked)))];
        }
    }

    /// <summary>The client went away: the writer stops at once.</summary>
    public void Disconnected()
    {
        Complete();
        _gone.Cancel();
    }

    protected override MqttFrame Encode(OutboundMessage message, out int size)
    {
        var m = message.Message;
        var qos = QosOf(m.Topic);
        size = m.Data.Length + m.Topic.Length + 64;
        if (message.Retained)
        {
            // The topic's latest value, sent to a subscribe without a resume point (KeepLatest, Retain): what MQTT calls
            // a retained message. Built for this subscriber alone (once per subscribe).
            return new MqttFrame(MqttForms.Build(m, qos, retain: true), m.Topic, m.Epoch, m.Seq, qos != MqttQualityOfServiceLevel.AtMostOnce);
        }

        var forms = message.Encoded(Message);
        return qos switch
        {
            MqttQualityOfServiceLevel.AtMostOnce => new MqttFrame(forms.AtMostOnce, m.Topic, m.Epoch, m.Seq, false),
            MqttQualityOfServiceLevel.AtLeastOnce => new MqttFrame(forms.AtLeastOnce, m.Topic, m.Epoch, m.Seq, true),
            _ => new MqttFrame(forms.ExactlyOnce, m.Topic, m.Epoch, m.Seq, true),
        };
    }

    protected override async ValueTask WriteAsync(MqttFrame frame, bool moreQueued, CancellationToken cancellationToken)
    {
        var session = Volatile.Read(ref _session) ?? throw new IOException("The MQTT session is not attached.");
        Sending(frame);
        if (moreQueued && _unawaited < AwaitEvery)
        {
            _unawaited++;
            if (!session.TryEnqueueApplicationMessage(frame.Message, out _))
            {
                Close(WireCodes.Slow);
            }

            return;
        }

        _unawaited = 0;
        await session.DeliverApplicationMessageAsync(frame.Message).WaitAsync(cancellationToken);
    }

    protected override Task CloseTransportAsync(string reason, CancellationToken cancellationToken) => _disconnect(this, reason);

    protected override void Abort()
    {
        _ = _disconnect(this, CloseReason ?? "aborted");
        _gone.Cancel();
    }

    protected override bool IsTransportGone(Exception ex) => ex is MQTTnet.Exceptions.MqttCommunicationException || base.IsTransportGone(ex);

    private void Sending(MqttFrame frame)
    {
        if (frame.Message.Retain)
        {
            // A latest value sent at SUBSCRIBE may be older than where the subscription goes on from (the subscribe's
            // answer says where): it moves no position, and its acknowledgement is not counted (see Acknowledged).
            return;
        }

        lock (_topics)
        {
            if (!_topics.TryGetValue(frame.Topic, out var state))
            {
                return;
            }

            if (state.Epoch != frame.Epoch)
            {
                state.Epoch = frame.Epoch;
                state.Inflight.Clear();
                state.Acked = frame.Seq - 1;
            }

            if (frame.Acknowledged)
            {
                state.Inflight.Enqueue(frame.Seq);
            }
            else
            {
                state.Acked = frame.Seq;
            }
        }
    }

    private sealed class TopicState(MqttQualityOfServiceLevel qos, string? epoch, long acked)
    {
        public MqttQualityOfServiceLevel Qos { get; set; } = qos;

        public string? Epoch { get; set; } = epoch;

        public long Acked { get; set; } = acked;

        public Queue<long> Inflight { get; } = new();
    }

    private sealed class MessageForm : WireForm<MqttForms>
    {
        public override MqttForms Encode(TopicMessage message) => new(message);
    }
}

/// <summary>Where a topic of a gone client resumes.</summary>
internal sealed record ResumePoint(string Topic, MqttQualityOfServiceLevel Qos, Since Since);

/// <summary>A message's MQTT forms: the same payload (the published bytes, JSON or binary) at QoS 0, 1 and 2, each built on first
/// use. MQTT 5 clients also get the position as user properties <c>epoch</c> and <c>seq</c>.</summary>
internal sealed class MqttForms(TopicMessage message)
{
    private MqttApplicationMessage? _atMostOnce;
    private MqttApplicationMessage? _atLeastOnce;
    private MqttApplicationMessage? _exactlyOnce;

    public MqttApplicationMessage AtMostOnce => _atMostOnce ??= Build(message, MqttQualityOfServiceLevel.AtMostOnce, retain: false);

    public MqttApplicationMessage AtLeastOnce => _atLeastOnce ??= Build(message, MqttQualityOfServiceLevel.AtLeastOnce, retain: false);

    public MqttApplicationMessage ExactlyOnce => _exactlyOnce ??= Build(message, MqttQualityOfServiceLevel.ExactlyOnce, retain: false);

    /// <summary>The message's MQTT form; <paramref name="retain"/> marks the latest value sent at SUBSCRIBE.</summary>
    public static MqttApplicationMessage Build(TopicMessage message, MqttQualityOfServiceLevel qos, bool retain) => new MqttApplicationMessageBuilder()
        .WithTopic(message.Topic)
        .WithPayload(message.Data)
        .WithQualityOfServiceLevel(qos)
        .WithRetainFlag(retain)
        .WithContentType(message.Format == PayloadFormat.Binary ? "application/octet-stream" : "application/json")
        .WithPayloadFormatIndicator(message.Format == PayloadFormat.Binary ? MqttPayloadFormatIndicator.Unspecified : MqttPayloadFormatIndicator.CharacterData)
        .WithUserProperty("epoch", Encoding.UTF8.GetBytes(message.Epoch))
        .WithUserProperty("seq", Encoding.UTF8.GetBytes(message.Seq.ToString(CultureInfo.InvariantCulture)))
        .Build();
}

using System.Globalization;
using System.Text;
using MQTTnet;
using MQTTnet.Packets;
using MQTTnet.Protocol;
using MQTTnet.Server;
using OrleansPush.Gateway.Connections;
using OrleansPush.Gateway.Routing;

namespace OrleansPush.Gateway.Transports.Mqtt;

/// <summary>What an MQTT connection queues: the shared application message and the position it carries, and the message's
/// forms (what the publisher gave it that differs per subscriber: expiry, origin, retain flag).</summary>
/// <param name="LatestValue">The topic's latest value sent at SUBSCRIBE (with the retain flag): it moves no position.</param>
internal readonly record struct MqttFrame(MqttApplicationMessage Message, string Topic, string Epoch, long Seq, bool Acknowledged, MqttForms Forms, bool LatestValue = false);

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
    private readonly Dictionary<string, FilterOptions> _filterOptions = new(StringComparer.Ordinal);
    private readonly int _receiveMaximum;
    private SemaphoreSlim? _sendQuota;
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

    /// <summary>The client connected with clean session (MQTT 5: clean start) off: it resumes a session it left.</summary>
    public bool PersistentSession { get; }

    /// <summary>How long its session (subscriptions, positions) is kept after it goes; zero: not at all. MQTT 5: its
    /// Session Expiry Interval (CONNECT, or the DISCONNECT that changed it), at most <see cref="MqttOptions.SessionResumeWindow"/>.</summary>
    public TimeSpan SessionExpiry { get; set; }

    /// <summary>The client speaks MQTT 5 (which has reason codes in PUBACK and DISCONNECT).</summary>
    public bool Mqtt5 { get; init; }

    /// <summary>The will of its CONNECT, published if it goes without DISCONNECT.</summary>
    public MqttWill? Will { get; init; }

    /// <summary>The clock that tells whether a message has expired (MQTT 5 message expiry).</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;

    /// <summary>MQTT 5 Maximum Packet Size of the CONNECT: no larger PUBLISH is sent to this client (0: no limit).</summary>
    public uint MaximumPacketSize { get; init; }

    /// <summary>MQTT 5 Receive Maximum of the CONNECT: at most this many QoS 1 and 2 messages are sent to the client and
    /// not yet acknowledged (PUBACK, PUBCOMP) at any time; 0 means no limit beyond the protocol's 65,535.</summary>
    public ushort ReceiveMaximum
    {
        get => (ushort)(_sendQuota is null ? 0 : _receiveMaximum);
        init
        {
            _receiveMaximum = value;
            _sendQuota = value is > 0 and < ushort.MaxValue ? new SemaphoreSlim(value, value) : null;
        }
    }

    /// <summary>The Subscription Identifier of the SUBSCRIBE being handled (MQTT 5; 0: none). The broker handles one
    /// packet of a client at a time, and each filter of that SUBSCRIBE right after it arrives.</summary>
    public uint PendingSubscriptionIdentifier { get; set; }

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
            _filterOptions.Remove(filter);
        }
    }

    /// <summary>The MQTT 5 options of a subscription (SUBSCRIBE again replaces them): no local (the client's own
    /// messages are not sent back to it through this filter), retain as published (a message published with the retain
    /// flag keeps it when sent live) and its subscription identifier (0: none).</summary>
    public void SetFilterOptions(string filter, bool noLocal, bool retainAsPublished, uint identifier, bool noRetained = false)
    {
        lock (_topics)
        {
            if (noLocal || retainAsPublished || identifier != 0 || noRetained)
            {
                _filterOptions[filter] = new FilterOptions(noLocal, retainAsPublished, identifier, noRetained);
            }
            else
            {
                _filterOptions.Remove(filter);
            }
        }
    }

    /// <summary>Whether a no-local subscription of this client matches <paramref name="topic"/>: its own publish to the
    /// topic then carries its client id, so that it does not come back to it.</summary>
    public bool NoLocalFor(string topic)
    {
        lock (_topics)
        {
            foreach (var (filter, options) in _filterOptions)
            {
                if (options.NoLocal && MqttWildcards.Matches(topic, filter))
                {
                    return true;
                }
            }

            return false;
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

    /// <summary>The client acknowledged (PUBACK, PUBCOMP) the oldest unacknowledged QoS 1 or 2 message of <paramref name="topic"/>
    /// (a latest value sent at SUBSCRIBE moves no position).</summary>
    public void Acknowledged(string topic)
    {
        if (_sendQuota is { } quota && quota.CurrentCount < _receiveMaximum)
        {
            quota.Release();
        }

        lock (_topics)
        {
            if (_topics.TryGetValue(topic, out var state) && state.Inflight.TryDequeue(out var seq) && seq != LatestValueMark)
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
        var forms = message.Encoded(Message);
        if (forms.MaxQos < qos)
        {
            qos = forms.MaxQos; // the minimum of the published and the granted QoS (MQTT 5 §3.8.4, MQTT 3.1.1 §3.8.4)
        }

        if (message.Retained)
        {
            // The topic's latest value, sent to a subscribe without a resume point (KeepLatest, Retain): what MQTT calls
            // a retained message. Built for this subscriber alone (once per subscribe).
            return new MqttFrame(forms.Build(qos, retain: true), m.Topic, m.Epoch, m.Seq, qos != MqttQualityOfServiceLevel.AtMostOnce, forms, LatestValue: true);
        }

        return qos switch
        {
            MqttQualityOfServiceLevel.AtMostOnce => new MqttFrame(forms.AtMostOnce, m.Topic, m.Epoch, m.Seq, false, forms),
            MqttQualityOfServiceLevel.AtLeastOnce => new MqttFrame(forms.AtLeastOnce, m.Topic, m.Epoch, m.Seq, true, forms),
            _ => new MqttFrame(forms.ExactlyOnce, m.Topic, m.Epoch, m.Seq, true, forms),
        };
    }

    protected override async ValueTask WriteAsync(MqttFrame frame, bool moreQueued, CancellationToken cancellationToken)
    {
        var session = Volatile.Read(ref _session) ?? throw new IOException("The MQTT session is not attached.");
        if (frame.Forms.Origin is not null || frame.Forms.ExpiresAtUnixMs != 0 || MaximumPacketSize != 0 || HasFilterOptions)
        {
            // MQTT 5 rules that differ per subscriber: none of them applies to most messages and clients.
            if (ForThisClient(frame) is not { } message)
            {
                Skipped(frame);
                return;
            }

            frame = frame with { Message = message };
        }

        if (!Sending(frame))
        {
            // Unsubscribed since it was queued: once UNSUBSCRIBE is answered no new message of the topic goes out
            // (MQTT 3.10.4), and what was still queued is dropped rather than sent after the UNSUBACK.
            return;
        }

        if (frame.Acknowledged && _sendQuota is { } quota)
        {
            // Receive Maximum: the client takes no more unacknowledged QoS 1 and 2 messages than it said.
            await quota.WaitAsync(cancellationToken);
        }
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

    private bool HasFilterOptions
    {
        get
        {
            lock (_topics)
            {
                return _filterOptions.Count > 0;
            }
        }
    }

    /// <summary>The message as this client gets it, or null when it does not get it: expired (MQTT 5 §3.3.2.3.3; it
    /// gets the remaining interval), its own publish and every matching subscription no-local (§3.8.3.1; a matching
    /// subscription with retain as published keeps a retained publish's flag), or larger than
    /// its Maximum Packet Size even without the properties of ours (§3.1.2.11.4: not sent, as if delivered). Its
    /// matching subscriptions' identifiers go with it (§3.3.4).</summary>
    private MqttApplicationMessage? ForThisClient(MqttFrame frame)
    {
        var message = frame.Message;
        uint expiry = 0;
        if (frame.Forms.ExpiresAtUnixMs != 0)
        {
            var left = frame.Forms.ExpiresAtUnixMs - Time.GetUtcNow().ToUnixTimeMilliseconds();
            if (left <= 0)
            {
                return null;
            }

            expiry = (uint)((left + 999) / 1000);
        }

        List<uint>? identifiers = null;
        var retain = message.Retain;
        lock (_topics)
        {
            if (frame.LatestValue && NoRetainedFor(frame.Topic))
            {
                return null;
            }

            if (_filterOptions.Count > 0 || frame.Forms.Origin is not null)
            {
                var own = frame.Forms.Origin == ClientId;
                var delivered = !own;
                foreach (var filter in _filters.Keys)
                {
                    if (!MqttWildcards.Matches(frame.Topic, filter))
                    {
                        continue;
                    }

                    _filterOptions.TryGetValue(filter, out var options);
                    if (own && options.NoLocal)
                    {
                        continue;
                    }

                    delivered = true;
                    retain |= options.RetainAsPublished && frame.Forms.PublishedRetained;
                    if (options.Identifier != 0)
                    {
                        (identifiers ??= []).Add(options.Identifier);
                    }
                }

                if (!delivered)
                {
                    return null;
                }
            }
        }

        if (expiry != 0 || identifiers is not null || retain != message.Retain)
        {
            message = MqttForms.Copy(message, expiry != 0 ? expiry : message.MessageExpiryInterval, identifiers);
            message.Retain = retain;
        }

        if (MaximumPacketSize != 0 && MqttForms.PacketSize(message) > MaximumPacketSize)
        {
            message = MqttForms.WithoutOurProperties(message);
            if (MqttForms.PacketSize(message) > MaximumPacketSize)
            {
                return null;
            }
        }

        return message;
    }

    /// <summary>A subscription matching <paramref name="topic"/> asked for no retained message at subscribe (retain handling
    /// 2). Its options are set before it subscribes, so they are there when its topics' latest values come.</summary>
    private bool NoRetainedFor(string topic)
    {
        foreach (var (filter, options) in _filterOptions)
        {
            if (options.NoRetained && MqttWildcards.Matches(topic, filter))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>A message this client does not get counts as delivered (its position moves on when nothing before it
    /// awaits an acknowledgement).</summary>
    private void Skipped(MqttFrame frame)
    {
        if (frame.LatestValue)
        {
            return; // a latest value never moves the position
        }

        lock (_topics)
        {
            if (_topics.TryGetValue(frame.Topic, out var state) && state.Epoch == frame.Epoch && state.Inflight.Count == 0)
            {
                state.Acked = frame.Seq;
            }
        }
    }

    /// <summary>Records that <paramref name="frame"/> goes out; false when the client no longer follows its topic.</summary>
    private bool Sending(MqttFrame frame)
    {
        lock (_topics)
        {
            if (!_topics.TryGetValue(frame.Topic, out var state))
            {
                return false;
            }

            if (frame.LatestValue)
            {
                // A latest value sent at SUBSCRIBE may be older than where the subscription goes on from (the
                // subscribe's answer says where): it moves no position. Its acknowledgement comes in order with the
                // topic's others (MQTT 3.1.1 §4.6), so it takes a place in the queue that moves nothing when acknowledged.
                if (frame.Acknowledged)
                {
                    state.Inflight.Enqueue(LatestValueMark);
                }

                return true;
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

            return true;
        }
    }

    // In a topic's queue of unacknowledged messages: a latest value's place.
    private const long LatestValueMark = -1;

    private sealed class TopicState(MqttQualityOfServiceLevel qos, string? epoch, long acked)
    {
        public MqttQualityOfServiceLevel Qos { get; set; } = qos;

        public string? Epoch { get; set; } = epoch;

        public long Acked { get; set; } = acked;

        public Queue<long> Inflight { get; } = new();
    }

    /// <param name="NoRetained">Retain handling 2 (MQTT 5 §3.8.3.1): no retained message (latest value) at subscribe.</param>
    private readonly record struct FilterOptions(bool NoLocal, bool RetainAsPublished, uint Identifier, bool NoRetained);

    private sealed class MessageForm : WireForm<MqttForms>
    {
        public override MqttForms Encode(TopicMessage message) => new(message);
    }
}

/// <summary>Where a topic of a gone client resumes.</summary>
internal sealed record ResumePoint(string Topic, MqttQualityOfServiceLevel Qos, Since Since);

/// <summary>A message's MQTT forms: the same payload (the published bytes, JSON or binary) at QoS 0, 1 and 2, each built on first
/// use, with the MQTT 5 properties the publisher gave it (<see cref="MqttMessageProperties"/>, decoded once per message).
/// Where the publisher gave none, MQTT 5 clients get ours: a content type (<c>application/json</c> or
/// <c>application/octet-stream</c>) and the position as user properties <c>epoch</c> and <c>seq</c>; a message with user
/// properties of its own carries exactly those, in their order, as a broker forwards them (§3.3.2.3.7).</summary>
internal sealed class MqttForms(TopicMessage message)
{
    private const string EpochProperty = "epoch";
    private const string SeqProperty = "seq";
    private readonly MqttMessageProperties? _properties = MqttMessageProperties.Decode(message.Properties);
    private MqttApplicationMessage? _atMostOnce;
    private MqttApplicationMessage? _atLeastOnce;
    private MqttApplicationMessage? _exactlyOnce;

    public MqttApplicationMessage AtMostOnce => _atMostOnce ??= Build(MqttQualityOfServiceLevel.AtMostOnce, retain: false);

    public MqttApplicationMessage AtLeastOnce => _atLeastOnce ??= Build(MqttQualityOfServiceLevel.AtLeastOnce, retain: false);

    public MqttApplicationMessage ExactlyOnce => _exactlyOnce ??= Build(MqttQualityOfServiceLevel.ExactlyOnce, retain: false);

    /// <summary>The publisher's client id, when it has a no-local subscription matching the topic.</summary>
    public string? Origin => _properties?.Origin;

    /// <summary>The QoS it was published with (MQTT), or <see cref="MqttQualityOfServiceLevel.ExactlyOnce"/>.</summary>
    public MqttQualityOfServiceLevel MaxQos => _properties?.MaxQos ?? MqttQualityOfServiceLevel.ExactlyOnce;

    /// <summary>The publisher set the retain flag (MQTT): sent live with it to a subscription with retain as published.</summary>
    public bool PublishedRetained => _properties?.Retained ?? false;

    /// <summary>When the message expires (Unix milliseconds), 0 when it does not.</summary>
    public long ExpiresAtUnixMs => _properties is { ExpiryInterval: > 0 } p ? message.PublishedAtUnixMs + (p.ExpiryInterval * 1000L) : 0;

    /// <summary>The message's MQTT form; <paramref name="retain"/> marks the latest value sent at SUBSCRIBE.</summary>
    public MqttApplicationMessage Build(MqttQualityOfServiceLevel qos, bool retain)
    {
        var p = _properties;
        var binary = message.Format == PayloadFormat.Binary;
        var built = new MqttApplicationMessage
        {
            Topic = message.Topic,
            Payload = new System.Buffers.ReadOnlySequence<byte>(message.Data),
            QualityOfServiceLevel = qos,
            Retain = retain,
            ContentType = p?.ContentType ?? (binary ? "application/octet-stream" : "application/json"),
            PayloadFormatIndicator = binary && p?.PayloadFormat != MqttPayloadFormatIndicator.CharacterData
                ? MqttPayloadFormatIndicator.Unspecified
                : MqttPayloadFormatIndicator.CharacterData,
            MessageExpiryInterval = p?.ExpiryInterval ?? 0,
            ResponseTopic = p?.ResponseTopic,
            CorrelationData = p?.CorrelationData,
            UserProperties = p?.UserProperties ??
            [
                new MqttUserProperty(EpochProperty, Encoding.UTF8.GetBytes(message.Epoch)),
                new MqttUserProperty(SeqProperty, Encoding.UTF8.GetBytes(message.Seq.ToString(CultureInfo.InvariantCulture))),
            ],
        };
        return built;
    }

    /// <summary>A copy of <paramref name="message"/> for one client: its remaining expiry, its subscription identifiers.</summary>
    public static MqttApplicationMessage Copy(MqttApplicationMessage message, uint expiry, List<uint>? identifiers) => new()
    {
        Topic = message.Topic,
        Payload = message.Payload,
        QualityOfServiceLevel = message.QualityOfServiceLevel,
        Retain = message.Retain,
        ContentType = message.ContentType,
        PayloadFormatIndicator = message.PayloadFormatIndicator,
        MessageExpiryInterval = expiry,
        ResponseTopic = message.ResponseTopic,
        CorrelationData = message.CorrelationData,
        UserProperties = message.UserProperties,
        SubscriptionIdentifiers = identifiers ?? message.SubscriptionIdentifiers,
    };

    /// <summary>Without the properties a publisher did not give (our content type and position), for a client whose
    /// Maximum Packet Size the message exceeds with them.</summary>
    public static MqttApplicationMessage WithoutOurProperties(MqttApplicationMessage message)
    {
        var copy = Copy(message, message.MessageExpiryInterval, null);
        if (copy.UserProperties is [{ Name: EpochProperty }, { Name: SeqProperty }])
        {
            copy.UserProperties = null;
        }

        if (copy.ContentType is "application/json" or "application/octet-stream")
        {
            copy.ContentType = null;
        }

        return copy;
    }

    /// <summary>The size in bytes of the MQTT 5 PUBLISH packet that carries <paramref name="message"/> (§3.3).</summary>
    public static long PacketSize(MqttApplicationMessage message)
    {
        long properties = (message.PayloadFormatIndicator != MqttPayloadFormatIndicator.Unspecified ? 2 : 0)
            + (message.MessageExpiryInterval != 0 ? 5 : 0)
            + StringSize(message.ContentType) + StringSize(message.ResponseTopic)
            + (message.CorrelationData is { } c ? 3 + c.Length : 0);
        foreach (var p in message.UserProperties ?? [])
        {
            properties += 1 + 2 + Encoding.UTF8.GetByteCount(p.Name) + 2 + p.ValueBuffer.Length;
        }

        foreach (var id in message.SubscriptionIdentifiers ?? [])
        {
            properties += 1 + VariableByteSize(id);
        }

        var remaining = 2 + Encoding.UTF8.GetByteCount(message.Topic) + (message.QualityOfServiceLevel == MqttQualityOfServiceLevel.AtMostOnce ? 0 : 2)
            + VariableByteSize(properties) + properties + message.Payload.Length;
        return 1 + VariableByteSize(remaining) + remaining;
    }

    private static long StringSize(string? value) => value is null ? 0 : 3 + Encoding.UTF8.GetByteCount(value);

    private static int VariableByteSize(long value) => value < 128 ? 1 : value < 16_384 ? 2 : value < 2_097_152 ? 3 : 4;
}

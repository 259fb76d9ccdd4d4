using System.Collections.Concurrent;
using System.Net.WebSockets;
using OrleansPush.Gateway.Connections;

namespace OrleansPush.Gateway.Transports.WebSockets;

/// <summary>A raw-protocol WebSocket connection: every frame is one UTF-8 JSON text message.
/// <para>Topics subscribed with <c>"delta":"fossil"</c> get their JSON messages as <c>text</c>, or as a <c>delta</c>
/// against the message before when this connection was sent that one (seq − 1, same epoch) just before; anything else
/// (the first message, one after a jump, one after a binary payload) goes whole. Which it last sent is tracked per
/// topic, where the message is queued, so the client, reading in queue order, always holds the delta's source.</para></summary>
internal sealed class WebSocketConnection(WebSocket socket, string? userId, string? remoteAddress, OutboundLimits limits)
    : QueuedConnection<byte[]>("ws", userId, remoteAddress, limits)
{
    // Topic -> what was last queued on it. Each topic's entry is touched by its own fan-out shard only (and replaced
    // whole by a subscribe), so the entries need no lock.
    private readonly ConcurrentDictionary<string, DeltaState> _delta = new(StringComparer.Ordinal);

    // Set once this connection first asks for deltas: until then a message is encoded without looking at _delta
    // (ConcurrentDictionary.IsEmpty takes every lock of the dictionary when it is empty, once per message).
    private volatile bool _usesDelta;

    /// <summary>Queues a reply frame; replies share the bound with messages, so a flood of requests from a client
    /// that does not read its replies ends like any slow client.</summary>
    public bool Reply(byte[] frame) => Enqueue(frame, frame.Length);

    public override void DeliverPresence(PresenceChanged change) => Reply(WsFrames.Presence(change));

    /// <summary><c>{"op":"reset","topic":..,"code":..}</c>, behind every message already queued for the topic.</summary>
    public override void SubscriptionEnded(string topic, string code) => Reply(WsFrames.Reset(topic, code));

    /// <summary>Turns delta delivery on or off for a topic, before its subscribe runs: the next message is whole.</summary>
    public void UseDelta(string topic, bool on)
    {
        if (on)
        {
            _delta[topic] = new DeltaState();
            _usesDelta = true;
        }
        else
        {
            _delta.TryRemove(topic, out _);
        }
    }

    protected override bool Conflates => true;

    /// <summary>The message it replaces was never written: a delta topic's message goes whole.</summary>
    protected override byte[] EncodeReplacing(OutboundMessage message, out int size) => Encode(message, whole: true, out size);

    protected override byte[] Encode(OutboundMessage message, out int size) => Encode(message, whole: false, out size);

    private byte[] Encode(OutboundMessage message, bool whole, out int size)
    {
        var frame = !_usesDelta || !_delta.TryGetValue(message.Message.Topic, out var state)
            ? message.Encoded(WsFrames.Message)
            : state.Next(message, whole);
        size = frame.Length;
        return frame;
    }

    private sealed class DeltaState
    {
        private string? _epoch;
        private long _seq = -1;

        /// <summary>The message's frame: a delta when this connection's last queued message of the topic is seq − 1
        /// (unless <paramref name="whole"/>), else the text form.</summary>
        public byte[] Next(OutboundMessage outbound, bool whole)
        {
            var m = outbound.Message;
            if (m.Format != PayloadFormat.Json)
            {
                _epoch = null; // binary payloads go as data_b64, never as a delta source
                return outbound.Encoded(WsFrames.Message);
            }

            var frame = !whole && _epoch == m.Epoch && _seq == m.Seq - 1 && outbound.Previous is not null
                ? outbound.Encoded(WsFrames.DeltaMessage)
                : outbound.Encoded(WsFrames.TextMessage);
            _epoch = m.Epoch;
            _seq = m.Seq;
            return frame;
        }
    }

    protected override ValueTask WriteAsync(byte[] frame, bool moreQueued, CancellationToken cancellationToken) =>
        socket.SendAsync(frame, WebSocketMessageType.Text, WebSocketMessageFlags.EndOfMessage, cancellationToken);

    protected override async Task CloseTransportAsync(string reason, CancellationToken cancellationToken)
    {
        if (socket.State is not (WebSocketState.Open or WebSocketState.CloseReceived))
        {
            return;
        }

        // Going away for the server's reasons is a "bye" (reconnect and resume); for the client's own, an error.
        var last = reason is WireCodes.Slow or WireCodes.Shutdown
            ? WsFrames.Bye(reason, reconnect: true)
            : WsFrames.Error(null, reason, reason switch
            {
                WireCodes.TooLarge => "The frame was over the size limit.",
                WireCodes.Unauthorized => "The token expired or was revoked; reconnect with a fresh one.",
                WireCodes.Unavailable => "A message could not be sent on this connection; reconnect and resume.",
                _ => "The connection was closed.",
            });
        await socket.SendAsync(last, WebSocketMessageType.Text, WebSocketMessageFlags.EndOfMessage, cancellationToken);
        var status = reason switch
        {
            WireCodes.TooLarge => WebSocketCloseStatus.MessageTooBig,
            WireCodes.Shutdown => WebSocketCloseStatus.EndpointUnavailable,
            WireCodes.Unavailable => WebSocketCloseStatus.InternalServerError,
            _ => WebSocketCloseStatus.PolicyViolation,
        };
        await socket.CloseOutputAsync(status, reason, cancellationToken);
    }

    protected override void Abort() => socket.Abort();

    protected override bool IsTransportGone(Exception ex) => ex is WebSocketException || base.IsTransportGone(ex);
}

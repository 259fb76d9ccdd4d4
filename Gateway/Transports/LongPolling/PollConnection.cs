using OrleansPush.Gateway.Connections;

namespace OrleansPush.Gateway.Transports.LongPolling;

/// <summary>
/// The connection of one poll request: it lives as long as the request, collects what the router delivers and wakes
/// the waiting request on the first message. It holds no thread: the request awaits <see cref="Arrived"/>.
/// <para>Guarantees: per topic, the collected messages are in seq order with no gap. Once a message does not fit
/// (message or byte limit), nothing more is collected for any topic, and <see cref="Collected.FirstDropped"/> tells
/// where each topic stopped, so the next poll continues from there without loss. A topic whose subscription the router
/// ended (a gap history cannot fill) collects nothing more, and the poll is answered at once: its position stays before
/// the gap, so the next poll's <c>since</c> says <c>recovered:false</c> for it.</para>
/// </summary>
internal sealed class PollConnection(string? userId, string? remoteAddress, int maxMessages, long maxBytes)
    : PushConnection("poll", userId, remoteAddress)
{
    private readonly Lock _lock = new();
    private readonly List<TopicMessage> _messages = [];
    private static readonly WireForm<byte[]> Checked = new JsonChecked();
    private readonly Dictionary<string, TopicPosition> _firstDropped = new(StringComparer.Ordinal);
    private readonly HashSet<string> _ended = new(StringComparer.Ordinal);
    private string? _closeReason;
    private readonly TaskCompletionSource _arrived = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _bytes;
    private bool _full;
    private bool _sealed;

    /// <summary>Completes when the first message is collected (or the connection is closed).</summary>
    public Task Arrived => _arrived.Task;

    /// <summary>Why the router closed the poll (a message it could not encode), or null.</summary>
    public string? CloseReason
    {
        get
        {
            lock (_lock)
            {
                return _closeReason;
            }
        }
    }

    public override bool Deliver(OutboundMessage message)
    {
        var m = message.Message;
        message.Encoded(Checked); // the answer is JSON: a payload that is not fails here, once per message
        lock (_lock)
        {
            if (_sealed || _ended.Contains(m.Topic))
            {
                return false;
            }

            if (_full || (_messages.Count > 0 && (_messages.Count >= maxMessages || _bytes + m.Data.Length > maxBytes)))
            {
                _full = true;
                _firstDropped.TryAdd(m.Topic, new TopicPosition(m.Epoch, m.Seq));
                return false;
            }

            _messages.Add(m);
            _bytes += m.Data.Length;
        }

        _arrived.TrySetResult();
        return true;
    }

    public override void SubscriptionEnded(string topic, string code)
    {
        lock (_lock)
        {
            _ended.Add(topic);
        }

        _arrived.TrySetResult();
    }

    public override void Close(string reason)
    {
        lock (_lock)
        {
            _sealed = true;
            _closeReason ??= reason;
        }

        _arrived.TrySetResult();
    }

    /// <summary>Stops collecting and returns what was collected.</summary>
    public Collected Seal()
    {
        lock (_lock)
        {
            _sealed = true;
            return new Collected([.. _messages], new Dictionary<string, TopicPosition>(_firstDropped, StringComparer.Ordinal));
        }
    }

    public sealed record Collected(TopicMessage[] Messages, Dictionary<string, TopicPosition> FirstDropped);

    /// <summary>Checks, once per message, that a JSON payload is one JSON value (the answer embeds it as is; a binary one
    /// goes base64-encoded).</summary>
    private sealed class JsonChecked : WireForm<byte[]>
    {
        public override byte[] Encode(TopicMessage message)
        {
            if (message.Format == PayloadFormat.Binary)
            {
                return message.Data;
            }

            var reader = new System.Text.Json.Utf8JsonReader(message.Data);
            if (!reader.Read())
            {
                throw new System.Text.Json.JsonException("No JSON value.");
            }

            reader.Skip();
            if (reader.Read())
            {
                throw new System.Text.Json.JsonException("More than one JSON value.");
            }

            return message.Data;
        }
    }
}

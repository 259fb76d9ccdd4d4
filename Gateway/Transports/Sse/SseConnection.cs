using System.Buffers;
using System.Buffers.Text;
using System.IO.Pipelines;
using System.Text;
using OrleansPush.Gateway.Connections;
using OrleansPush.Gateway.Routing;
using OrleansPush.Gateway.Transports.Http;

namespace OrleansPush.Gateway.Transports.Sse;

/// <summary>What an SSE stream queues: the shared bytes of an event, and what the event says about a topic's
/// position (the writer keeps the stream's position from these, in stream order).</summary>
internal readonly record struct SseFrame(byte[] Bytes, SseFrameKind Kind, string? Topic, string? Epoch, long Seq);

internal enum SseFrameKind
{
    /// <summary>A comment or a goodbye: no id.</summary>
    Plain,

    /// <summary>A message: it moves its topic's position to its own.</summary>
    Message,

    /// <summary>A topic was joined: its position, unless messages already written moved it further.</summary>
    Subscribed,
}

/// <summary>
/// One Server-Sent Events stream. A message event's bytes are encoded once (<see cref="SseFrames.Message"/>) and shared
/// by every stream; the <c>id:</c> line is this stream's own: the position of <b>every</b> topic of the stream after the
/// event (<see cref="StreamPositions"/>), so that a reconnect with <c>Last-Event-ID</c> resumes each topic with
/// <c>since</c> and loses nothing, whichever topic the last event was on.
/// <para>Why the queue holds <see cref="SseFrame"/> and not <c>byte[]</c>: the id depends on what this stream has
/// written so far, so it is written by the writer loop, after the shared bytes and straight into the response, rather
/// than concatenated into a per-subscriber copy of every event.</para>
/// </summary>
internal sealed class SseConnection : QueuedConnection<SseFrame>
{
    private const int FlushThreshold = 32 * 1024;
    private readonly HttpContext _context;
    private readonly PipeWriter _body;
    private readonly Lock _requestLock = new();
    private bool _requestEnded;

    // Touched only by the writer loop (and by Seed before it starts).
    private readonly List<Position> _positions = [];
    private readonly Dictionary<string, Position> _byTopic = new(StringComparer.Ordinal);
    private long _unflushed;

    public SseConnection(HttpContext context, string? userId, OutboundLimits limits)
        : base("sse", userId, context.Connection.RemoteIpAddress?.ToString(), limits)
    {
        _context = context;
        _body = context.Response.BodyWriter;
    }

    /// <summary>Starts the stream's position from a reconnect's <c>Last-Event-ID</c>, before the writer runs: until a
    /// topic's own events are written, the ids carry where the client was.</summary>
    public void Seed(string topic, Since since) => Set(topic, since.Epoch, since.Seq, fromMessage: false);

    /// <summary>Queues the <c>subscribed</c> event of a topic. Queued after the subscribe completed, so behind every
    /// message the subscribe replayed.</summary>
    public bool Subscribed(string topic, SubscribeResult result)
    {
        var bytes = SseFrames.Subscribed(topic, result);
        return Enqueue(new SseFrame(bytes, SseFrameKind.Subscribed, topic, result.Epoch, result.Seq), bytes.Length);
    }

    public bool Ping() => Enqueue(new SseFrame(SseFrames.Ping, SseFrameKind.Plain, null, null, 0), SseFrames.Ping.Length);

    protected override bool Conflates => true;

    protected override SseFrame Encode(OutboundMessage message, out int size)
    {
        var bytes = message.Encoded(SseFrames.Message);
        var m = message.Message;
        size = bytes.Length + 64; // plus the id, whose length the writer alone knows
        return new SseFrame(bytes, SseFrameKind.Message, m.Topic, m.Epoch, m.Seq);
    }

    protected override async ValueTask WriteAsync(SseFrame frame, bool moreQueued, CancellationToken cancellationToken)
    {
        switch (frame.Kind)
        {
            case SseFrameKind.Message:
                Set(frame.Topic!, frame.Epoch!, frame.Seq, fromMessage: true);
                break;
            case SseFrameKind.Subscribed:
                Join(frame.Topic!, frame.Epoch!, frame.Seq);
                break;
        }

        _body.Write(frame.Bytes);
        _unflushed += frame.Bytes.Length;
        if (frame.Kind != SseFrameKind.Plain)
        {
            WriteId();
        }

        if (!moreQueued || _unflushed >= FlushThreshold)
        {
            _unflushed = 0;
            var flushed = await _body.FlushAsync(cancellationToken);
            if (flushed.IsCompleted || flushed.IsCanceled)
            {
                throw new IOException("The client went away.");
            }
        }
    }

    protected override async Task CloseTransportAsync(string reason, CancellationToken cancellationToken)
    {
        _body.Write(SseFrames.Bye(reason));
        await _body.FlushAsync(cancellationToken);
    }

    /// <summary>The request is over (the endpoint is returning): from now on the context may already serve the
    /// connection's next request (Kestrel reuses it), so a close's delayed abort must not touch it.</summary>
    public void RequestEnded()
    {
        lock (_requestLock)
        {
            _requestEnded = true;
        }
    }

    protected override void Abort()
    {
        // Under the lock: the endpoint cannot return (and hand the context on) between the check and the abort.
        lock (_requestLock)
        {
            if (!_requestEnded)
            {
                _context.Abort();
            }
        }
    }

    private void Set(string topic, string epoch, long seq, bool fromMessage)
    {
        if (!_byTopic.TryGetValue(topic, out var position))
        {
            position = new Position(topic);
            _byTopic.Add(topic, position);
            _positions.Add(position);
        }

        position.Set(epoch, seq);
        position.FromMessage |= fromMessage;
    }

    /// <summary>A <c>subscribed</c> event: every message of its topic up to its seq was queued before it, so it may
    /// move the position forward, but never back, and never away from an epoch a written message already showed.</summary>
    private void Join(string topic, string epoch, long seq)
    {
        if (_byTopic.TryGetValue(topic, out var position) && position.FromMessage)
        {
            if (position.Epoch == epoch && seq > position.Seq)
            {
                position.Set(epoch, seq);
            }

            return;
        }

        Set(topic, epoch, seq, fromMessage: false);
    }

    /// <summary>Writes <c>id: topic=epoch:seq,...</c> and the blank line that ends the event, straight into the response.</summary>
    private void WriteId()
    {
        _body.Write("id: "u8);
        for (var i = 0; i < _positions.Count; i++)
        {
            var p = _positions[i];
            var span = _body.GetSpan(p.Prefix.Length + 22);
            if (i > 0)
            {
                span[0] = (byte)',';
                span = span[1..];
            }

            p.Prefix.CopyTo(span);
            Utf8Formatter.TryFormat(p.Seq, span[p.Prefix.Length..], out var digits);
            _body.Advance((i > 0 ? 1 : 0) + p.Prefix.Length + digits);
            _unflushed += p.Prefix.Length + digits + 1;
        }

        _body.Write("\n\n"u8);
    }

    private sealed class Position(string topic)
    {
        public string Topic { get; } = topic;

        public string Epoch { get; private set; } = string.Empty;

        public long Seq { get; private set; }

        public bool FromMessage { get; set; }

        /// <summary><c>topic=epoch:</c>, re-encoded only when the epoch changes.</summary>
        public byte[] Prefix { get; private set; } = [];

        public void Set(string epoch, long seq)
        {
            if (Prefix.Length == 0 || epoch != Epoch)
            {
                Epoch = epoch;
                Prefix = Encoding.UTF8.GetBytes(Topic + "=" + epoch + ":");
            }

            Seq = seq;
        }
    }
}

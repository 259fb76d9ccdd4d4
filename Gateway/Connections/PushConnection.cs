using System.Diagnostics;
using System.Threading.Channels;

namespace OrleansPush.Gateway.Connections;

/// <summary>Told once when a connection that had no room for a catch-up has drained (or is closing).</summary>
public interface IDrainListener
{
    /// <summary>Called on the connection's writer (or closing) thread: do no more than post work elsewhere.</summary>
    void OnDrained();
}

/// <summary>What <see cref="PushConnection.AddTopic"/> did.</summary>
internal enum TopicAdded
{
    Added,
    AlreadyThere,
    OverLimit,

    /// <summary>The connection went away: it can never be subscribed again.</summary>
    Gone,
}

/// <summary>What a registered connection follows of its user (<see cref="ConnectionCommands.OnConnectedAsync"/>).</summary>
public enum Registration
{
    /// <summary>Attached to the user's grain, and subscribed to the personal channel and the user's server-side
    /// subscriptions (raw WebSocket, SignalR, SSE).</summary>
    Full,

    /// <summary>Attached to the user's grain (so that admin actions and revocations anywhere reach it) but subscribed
    /// only to what the client asks for (MQTT).</summary>
    Attached,

    /// <summary>Known on this gateway only (counted, drained, closable by the user's admin actions here), without a
    /// grain call: one long poll request, which lives seconds and is admitted again on the next poll.</summary>
    Local,
}

/// <summary>
/// A client connection, whatever its transport. The fan-out knows only this: <see cref="Deliver"/> never blocks; a
/// connection that cannot keep up closes itself and the others are not delayed.
/// <para>A connection that went away (<see cref="MarkGone"/>) is never subscribed afterwards: <see cref="AddTopic"/>
/// refuses it, and the router checks <see cref="IsGone"/> where it records a subscription.</para>
/// </summary>
public abstract class PushConnection
{
    private static long _nextId;
    private readonly HashSet<string> _topics = new(StringComparer.Ordinal);
    private readonly HashSet<string> _serverSide = new(StringComparer.Ordinal);
    private volatile bool _gone;
    private int _lifecycle; // 0: opened, 1: registered, 2: torn down
    private IDisposable? _slots;

    protected PushConnection(string transport, string? userId, string? remoteAddress)
    {
        Id = transport + "-" + Interlocked.Increment(ref _nextId).ToString(System.Globalization.CultureInfo.InvariantCulture);
        Transport = transport;
        UserId = userId;
        RemoteAddress = remoteAddress;
    }

    public string Id { get; }

    public string Transport { get; }

    /// <summary>The authenticated user, or null for an anonymous connection.</summary>
    public string? UserId { get; }

    public string? RemoteAddress { get; }

    /// <summary>What the connection's token grants, and when it expires; replaced whole by a refresh.</summary>
    public Security.ConnectionAccess Access { get; set; } = Security.ConnectionAccess.None;

    /// <summary>The connection went away (its teardown began). Nothing may subscribe it from then on.</summary>
    public bool IsGone => _gone;

    /// <summary>Queues a message for writing. False when the connection takes nothing more (it is closing; a long poll
    /// that is full). Throws <see cref="MessageEncodingException"/> when its transport cannot encode the message.</summary>
    public abstract bool Deliver(OutboundMessage message);

    /// <summary>Flow control for catch-ups (history replayed to this connection): true when the connection can take a
    /// message of about <paramref name="bytes"/> now. Otherwise false, and <paramref name="listener"/> is told once
    /// when it has drained enough, or is closing. A connection without an outbound queue always has room.</summary>
    public virtual bool HasRoomFor(int bytes, IDrainListener listener) => true;

    /// <summary>A presence event (a user joined or left a topic this connection follows with presence events on).
    /// Transports without a form for it ignore it.</summary>
    public virtual void DeliverPresence(PresenceChanged change)
    {
    }

    /// <summary>The router ended this connection's subscription to <paramref name="topic"/> because a message it missed
    /// cannot be filled (<paramref name="code"/>: <see cref="WireCodes.InsufficientState"/>): the transport tells the
    /// client in its own way (DESIGN.md "Guarantees"). By default the connection is closed with the code.</summary>
    public virtual void SubscriptionEnded(string topic, string code) => Close(code);

    /// <summary>Closes the connection with a reason code (<see cref="WireCodes"/>), telling the client first when the
    /// transport can.</summary>
    public abstract void Close(string reason);

    /// <summary>How the connection was registered (meaningful once it was).</summary>
    public Registration Registration { get; private set; }

    /// <summary>The connection's teardown began: from now on it is never subscribed again.</summary>
    internal void MarkGone() => _gone = true;

    /// <summary>Holds the limit slots the door gave this connection until its teardown (transports whose connection
    /// outlives the request that admitted it: MQTT).</summary>
    internal void HoldSlots(IDisposable slots)
    {
        if (Interlocked.CompareExchange(ref _slots, slots, null) is not null || Volatile.Read(ref _lifecycle) == 2)
        {
            slots.Dispose();
        }
    }

    /// <summary>Registration begins; false when the connection was already registered or torn down.</summary>
    internal bool BeginRegistration(Registration registration)
    {
        Registration = registration;
        return Interlocked.CompareExchange(ref _lifecycle, 1, 0) == 0;
    }

    /// <summary>Teardown: true when the connection had been registered (then what registration did is undone, once).</summary>
    internal bool EndRegistration()
    {
        var was = Interlocked.Exchange(ref _lifecycle, 2);
        Interlocked.Exchange(ref _slots, null)?.Dispose();
        return was == 1;
    }

    /// <summary>Records a subscription (under the same lock as <see cref="MarkGone"/>'s effect on
    /// <see cref="DrainTopics"/>, so a connection that went away cannot gain one).</summary>
    internal TopicAdded AddTopic(string topic, int limit)
    {
        lock (_topics)
        {
            if (_gone)
            {
                return TopicAdded.Gone;
            }

            if (_topics.Contains(topic))
            {
                return TopicAdded.AlreadyThere;
            }

            if (_topics.Count >= limit)
            {
                return TopicAdded.OverLimit;
            }

            _topics.Add(topic);
            Observability.GatewayMetrics.SubscriptionsChanged(1);
            return TopicAdded.Added;
        }
    }

    /// <summary>Marks a subscription the backend decided (the personal channel, a server-side subscription): a token
    /// refresh does not take it away, and the client may subscribe to it again after a reset.</summary>
    internal void MarkServerSide(string topic)
    {
        lock (_topics)
        {
            _serverSide.Add(topic);
        }
    }

    internal bool IsServerSide(string topic)
    {
        lock (_topics)
        {
            return _serverSide.Contains(topic);
        }
    }

    /// <summary>The subscriptions the client made itself.</summary>
    internal string[] ClientTopics()
    {
        lock (_topics)
        {
            return [.. _topics.Where(t => !_serverSide.Contains(t))];
        }
    }

    internal bool RemoveTopic(string topic)
    {
        lock (_topics)
        {
            _serverSide.Remove(topic);
            var removed = _topics.Remove(topic);
            Observability.GatewayMetrics.SubscriptionsChanged(removed ? -1 : 0);
            return removed;
        }
    }

    /// <summary>A subscription the router ended: a client's own is gone (it subscribes again if it wants); one the
    /// backend decided stays recorded, so the client may take it up again with <c>since</c>.</summary>
    internal void EndTopic(string topic)
    {
        lock (_topics)
        {
            if (!_serverSide.Contains(topic) && _topics.Remove(topic))
            {
                Observability.GatewayMetrics.SubscriptionsChanged(-1);
            }
        }
    }

    internal string[] DrainTopics()
    {
        lock (_topics)
        {
            _gone = true;
            var all = _topics.ToArray();
            _topics.Clear();
            _serverSide.Clear();
            Observability.GatewayMetrics.SubscriptionsChanged(-all.Length);
            return all;
        }
    }

    public override string ToString() => Id;
}

/// <summary>How much a connection's outbound queue may hold, and how long a closing or stalled one is given.</summary>
/// <param name="MaxQueuedBytes">Past it the queue is dropped and the connection closed as <c>slow</c>.</param>
/// <param name="CloseGrace">How long a closing connection gets to take its goodbye before it is aborted.</param>
/// <param name="WriteStallTimeout">How long a write may wait for the transport while a catch-up waits for room before
/// the connection is closed as <c>slow</c> (a client that stopped reading); zero turns that off.</param>
public readonly record struct OutboundLimits(long MaxQueuedBytes, TimeSpan CloseGrace, TimeSpan WriteStallTimeout)
{
    /// <summary>A catch-up queues history only while the queue holds less than this...</summary>
    public long HighWater => MaxQueuedBytes / 2;

    /// <summary>...and, once it had no room, waits until the queue has drained to this.</summary>
    public long LowWater => MaxQueuedBytes / 4;
}

/// <summary>
/// A connection with a bounded outbound queue drained by one writer loop (centrifuge's per-connection write queue).
/// The bound is in bytes; past it the queue is dropped and the connection closed as <c>slow</c>: the client recovers
/// what it missed with <c>since</c> when it reconnects.
/// <para>Catch-ups are flow-controlled against the same queue (<see cref="HasRoomFor"/>): history is queued up to the
/// high-water mark, and the writer loop, not a timer, tells the waiting catch-ups when the queue has drained to the
/// low-water mark. Until the writer runs there is no room at all, so nothing is replayed into a stream that has not
/// started. A write the transport has not taken for <see cref="OutboundLimits.WriteStallTimeout"/> while a catch-up waits
/// (the client stopped reading) gets the connection closed as <c>slow</c>.</para>
/// </summary>
public abstract class QueuedConnection<TFrame> : PushConnection
{
    private readonly Channel<Queued> _queue = Channel.CreateUnbounded<Queued>(
        new UnboundedChannelOptions { SingleReader = true, SingleWriter = false, AllowSynchronousContinuations = false });
    private readonly OutboundLimits _limits;
    private readonly Lock _drainLock = new();
    private List<IDrainListener>? _drainWaiters;
    private int _drainWaiting;
    private int _writerStarted;
    private int _stallWatch;
    private long _writingSince;
    private long _queuedBytes;
    private string? _closeReason;

    // Conflating topics: the queued, not yet written message of each (a newer one takes its place). Locked by itself.
    private readonly Dictionary<string, Slot> _conflated = new(StringComparer.Ordinal);

    protected QueuedConnection(string transport, string? userId, string? remoteAddress, OutboundLimits limits)
        : base(transport, userId, remoteAddress)
    {
        _limits = limits;
    }

    /// <summary>Why the server closed the connection, or null.</summary>
    public string? CloseReason => Volatile.Read(ref _closeReason);

    public long QueuedBytes => Interlocked.Read(ref _queuedBytes);

    public override bool Deliver(OutboundMessage message)
    {
        if (message.Conflate && Conflates)
        {
            return DeliverConflated(message);
        }

        var frame = Encode(message, out var size);
        return Enqueue(frame, size);
    }

    /// <summary>Whether this transport conflates (<see cref="OutboundMessage.Conflate"/>). MQTT does not: its QoS flow
    /// keeps every message.</summary>
    protected virtual bool Conflates => false;

    /// <summary>Encodes a message that replaces an older one of its topic that was never written: the client will not
    /// have that one, so nothing may refer to it (a delta, for instance).</summary>
    protected virtual TFrame EncodeReplacing(OutboundMessage message, out int size) => Encode(message, out size);

    /// <summary>A conflating topic's message: it replaces the topic's message still waiting in the queue, if there is
    /// one (so the queue holds at most one message per conflating topic, and such a topic never makes the connection
    /// slow), else it is queued.</summary>
    private bool DeliverConflated(OutboundMessage message)
    {
        if (Volatile.Read(ref _closeReason) is not null)
        {
            return false;
        }

        var topic = message.Message.Topic;
        lock (_conflated)
        {
            int size;
            if (_conflated.TryGetValue(topic, out var waiting))
            {
                waiting.Frame = EncodeReplacing(message, out size);
                Interlocked.Add(ref _queuedBytes, size - waiting.Size);
                waiting.Size = size;
                Observability.GatewayMetrics.Conflated(Transport);
                return true;
            }

            var slot = new Slot(topic) { Frame = Encode(message, out size), Size = size };
            _conflated.Add(topic, slot);
            Interlocked.Add(ref _queuedBytes, size);
            if (!_queue.Writer.TryWrite(new Queued(default!, 0, null, slot)))
            {
                _conflated.Remove(topic);
                Interlocked.Add(ref _queuedBytes, -size);
                return false;
            }

            return true;
        }
    }

    /// <summary>Takes a conflating topic's frame off its slot as the writer reaches it: a message delivered from now on
    /// is queued behind, not put in its place.</summary>
    private (TFrame Frame, int Size) Take(Slot slot)
    {
        lock (_conflated)
        {
            _conflated.Remove(slot.Topic);
            return (slot.Frame, slot.Size);
        }
    }

    /// <summary>Queues a transport frame (a reply, an error) behind the messages already queued.</summary>
    public bool Enqueue(TFrame frame, int size) => Enqueue(new Queued(frame, size, null, null));

    /// <summary>Completes once everything queued before this call has been written (or is dropped because the
    /// connection closed): an answer sent outside the queue then cannot overtake what was queued for it.</summary>
    public Task WrittenAsync()
    {
        var written = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!Enqueue(new Queued(default!, 0, written, null)))
        {
            written.TrySetResult();
        }

        return written.Task;
    }

    public override bool HasRoomFor(int bytes, IDrainListener listener)
    {
        if (Volatile.Read(ref _closeReason) is not null || HasRoom(bytes))
        {
            return true; // a closing connection refuses the message itself, which ends the catch-up
        }

        lock (_drainLock)
        {
            (_drainWaiters ??= []).Add(listener);
            Interlocked.Exchange(ref _drainWaiting, 1);

            // The writer may have drained (or started) between the check above and the flag: look again, after it.
            if (Volatile.Read(ref _closeReason) is not null || (Volatile.Read(ref _writerStarted) == 1 && QueuedBytes <= _limits.LowWater))
            {
                _drainWaiters.Remove(listener);
                if (_drainWaiters.Count == 0)
                {
                    Volatile.Write(ref _drainWaiting, 0);
                }

                return true;
            }
        }

        WatchForStall();
        return false;
    }

    private bool HasRoom(int bytes)
    {
        if (Volatile.Read(ref _writerStarted) == 0)
        {
            return false;
        }

        var queued = QueuedBytes;
        return queued <= _limits.LowWater || queued + bytes <= _limits.HighWater;
    }

    private bool Enqueue(Queued item)
    {
        if (Volatile.Read(ref _closeReason) is not null)
        {
            return false;
        }

        if (Interlocked.Add(ref _queuedBytes, item.Size) > _limits.MaxQueuedBytes)
        {
            Interlocked.Add(ref _queuedBytes, -item.Size);
            Close(WireCodes.Slow);
            return false;
        }

        if (!_queue.Writer.TryWrite(item))
        {
            Interlocked.Add(ref _queuedBytes, -item.Size);
            return false;
        }

        return true;
    }

    public override void Close(string reason)
    {
        if (Interlocked.CompareExchange(ref _closeReason, reason, null) is not null)
        {
            return;
        }

        if (reason == WireCodes.Slow)
        {
            Observability.GatewayMetrics.SlowConsumerClosed(Transport);
        }

        // Wake the writer: it drops what is queued, says goodbye and closes. If the transport is stuck (the peer
        // stopped reading), the goodbye cannot get out, so the connection is aborted after a grace period.
        _queue.Writer.TryComplete();
        ReleaseDrainWaiters();
        _ = AbortAfterGraceAsync();
    }

    /// <summary>Ends the writer after what is queued has been written (the peer went away or said goodbye).</summary>
    public void Complete()
    {
        _queue.Writer.TryComplete();
        ReleaseDrainWaiters();
    }

    /// <summary>Writes queued frames until the queue completes; run once per connection by its transport.</summary>
    public async Task RunWriterAsync(CancellationToken cancellationToken)
    {
        var reader = _queue.Reader;
        Interlocked.Exchange(ref _writerStarted, 1);
        if (Volatile.Read(ref _drainWaiting) == 1 && QueuedBytes <= _limits.LowWater)
        {
            ReleaseDrainWaiters();
        }

        try
        {
            while (await reader.WaitToReadAsync(cancellationToken))
            {
                while (Volatile.Read(ref _closeReason) is null && reader.TryRead(out var item))
                {
                    if (item.Written is { } written)
                    {
                        written.TrySetResult();
                        continue;
                    }

                    var (frame, size) = item.Slot is { } slot ? Take(slot) : (item.Frame, item.Size);
                    Volatile.Write(ref _writingSince, Stopwatch.GetTimestamp());
                    await WriteAsync(frame, moreQueued: reader.TryPeek(out _), cancellationToken);
                    Volatile.Write(ref _writingSince, 0);
                    var left = Interlocked.Add(ref _queuedBytes, -size);
                    if (Volatile.Read(ref _drainWaiting) == 1 && left <= _limits.LowWater)
                    {
                        ReleaseDrainWaiters();
                    }
                }

                if (Volatile.Read(ref _closeReason) is not null)
                {
                    break;
                }
            }

            if (Volatile.Read(ref _closeReason) is { } reason)
            {
                DropQueued();
                await CloseTransportAsync(reason, cancellationToken);
            }
        }
        catch (OperationCanceledException)
        {
        }
        catch (Exception ex) when (IsTransportGone(ex))
        {
        }
        finally
        {
            DropQueued();
            ReleaseDrainWaiters();
        }
    }

    /// <summary>Encodes a message in this transport's wire form; <paramref name="size"/> counts against the bound.</summary>
    protected abstract TFrame Encode(OutboundMessage message, out int size);

    /// <summary>Writes one frame. <paramref name="moreQueued"/> lets a transport batch flushes.</summary>
    protected abstract ValueTask WriteAsync(TFrame frame, bool moreQueued, CancellationToken cancellationToken);

    /// <summary>Tells the client why it is being closed (when the transport can) and closes.</summary>
    protected abstract Task CloseTransportAsync(string reason, CancellationToken cancellationToken);

    /// <summary>Tears the transport down at once.</summary>
    protected abstract void Abort();

    protected virtual bool IsTransportGone(Exception ex) => ex is IOException or ObjectDisposedException;

    private void DropQueued()
    {
        while (_queue.Reader.TryRead(out var dropped))
        {
            Interlocked.Add(ref _queuedBytes, -(dropped.Slot is { } slot ? Take(slot).Size : dropped.Size));
            dropped.Written?.TrySetResult();
        }
    }

    private void ReleaseDrainWaiters()
    {
        List<IDrainListener>? waiters;
        lock (_drainLock)
        {
            waiters = _drainWaiters;
            _drainWaiters = null;
            Volatile.Write(ref _drainWaiting, 0);
        }

        if (waiters is not null)
        {
            foreach (var listener in waiters)
            {
                listener.OnDrained();
            }
        }
    }

    /// <summary>While catch-ups wait for room, a write that the transport has not taken for the stall timeout means a
    /// client that stopped reading: it is closed as slow (within a quarter of the timeout after that). A client that
    /// reads, however slowly, completes writes. One watch per connection, and only while someone waits.</summary>
    private void WatchForStall()
    {
        if (_limits.WriteStallTimeout > TimeSpan.Zero && Interlocked.Exchange(ref _stallWatch, 1) == 0)
        {
            _ = WatchAsync();
        }

        async Task WatchAsync()
        {
            try
            {
                while (Volatile.Read(ref _closeReason) is null && Volatile.Read(ref _drainWaiting) == 1)
                {
                    await Task.Delay(_limits.WriteStallTimeout / 4);
                    var writingSince = Volatile.Read(ref _writingSince);
                    if (writingSince != 0 && Stopwatch.GetElapsedTime(writingSince) >= _limits.WriteStallTimeout && Volatile.Read(ref _drainWaiting) == 1)
                    {
                        Close(WireCodes.Slow);
                        return;
                    }
                }
            }
            finally
            {
                Volatile.Write(ref _stallWatch, 0);
            }

            // A catch-up may have started waiting between the loop's last look and the reset just above.
            if (Volatile.Read(ref _drainWaiting) == 1 && Volatile.Read(ref _closeReason) is null)
            {
                WatchForStall();
            }
        }
    }

    private async Task AbortAfterGraceAsync()
    {
        await Task.Delay(_limits.CloseGrace);
        Abort();
    }

    /// <summary>A queued frame, a conflating topic's <see cref="Slot"/> (its frame is read when the writer reaches it),
    /// or a marker (<see cref="Written"/>) that completes when the writer reaches it.</summary>
    private readonly record struct Queued(TFrame Frame, int Size, TaskCompletionSource? Written, Slot? Slot);

    /// <summary>The place in the queue of a conflating topic's newest message.</summary>
    private sealed class Slot(string topic)
    {
        public string Topic { get; } = topic;

        public TFrame Frame { get; set; } = default!;

        public int Size { get; set; }
    }
}

using System.Threading.Channels;

namespace OrleansPush.Gateway.Connections;

/// <summary>
/// A client connection, whatever its transport. The fan-out knows only this: <see cref="Deliver"/> never blocks and
/// never throws; a connection that cannot keep up closes itself and the others are not delayed.
/// </summary>
public abstract class PushConnection
{
    private static long _nextId;
    private readonly HashSet<string> _topics = new(StringComparer.Ordinal);
    private readonly HashSet<string> _serverSide = new(StringComparer.Ordinal);

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

    /// <summary>Queues a message for writing. False when the connection is closing (it then wants nothing more).</summary>
    public abstract bool Deliver(OutboundMessage message);

    /// <summary>A presence event (a user joined or left a topic this connection follows with presence events on).
    /// Transports without a form for it ignore it.</summary>
    public virtual void DeliverPresence(PresenceChanged change)
    {
    }

    /// <summary>Closes the connection with a reason code (<c>slow</c>, <c>shutdown</c>, ...), telling the client first
    /// when the transport can.</summary>
    public abstract void Close(string reason);

    /// <summary>Records a subscription; false when it is already there.</summary>
    internal bool AddTopic(string topic, int limit, out bool overLimit)
    {
        lock (_topics)
        {
            overLimit = !_topics.Contains(topic) && _topics.Count >= limit;
            var added = !overLimit && _topics.Add(topic);
            Observability.GatewayMetrics.SubscriptionsChanged(added ? 1 : 0);
            return added;
        }
    }

    /// <summary>Marks a subscription the backend decided (the personal channel, a server-side subscription): a token
    /// refresh does not take it away.</summary>
    internal void MarkServerSide(string topic)
    {
        lock (_topics)
        {
            _serverSide.Add(topic);
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

    internal string[] DrainTopics()
    {
        lock (_topics)
        {
            var all = _topics.ToArray();
            _topics.Clear();
            _serverSide.Clear();
            Observability.GatewayMetrics.SubscriptionsChanged(-all.Length);
            return all;
        }
    }

    public override string ToString() => Id;
}

/// <summary>
/// A connection with a bounded outbound queue drained by one writer loop (centrifuge's per-connection write queue).
/// The bound is in bytes; past it the queue is dropped and the connection closed as <c>slow</c>: the client recovers
/// what it missed with <c>since</c> when it reconnects.
/// </summary>
public abstract class QueuedConnection<TFrame> : PushConnection
{
    private readonly Channel<(TFrame Frame, int Size)> _queue = Channel.CreateUnbounded<(TFrame, int)>(
        new UnboundedChannelOptions { SingleReader = true, SingleWriter = false, AllowSynchronousContinuations = false });
    private readonly long _maxQueuedBytes;
    private readonly TimeSpan _closeGrace;
    private long _queuedBytes;
    private string? _closeReason;

    protected QueuedConnection(string transport, string? userId, string? remoteAddress, long maxQueuedBytes, TimeSpan closeGrace)
        : base(transport, userId, remoteAddress)
    {
        _maxQueuedBytes = maxQueuedBytes;
        _closeGrace = closeGrace;
    }

    /// <summary>Why the server closed the connection, or null.</summary>
    public string? CloseReason => Volatile.Read(ref _closeReason);

    public long QueuedBytes => Interlocked.Read(ref _queuedBytes);

    public override bool Deliver(OutboundMessage message)
    {
        var frame = Encode(message, out var size);
        return Enqueue(frame, size);
    }

    /// <summary>Queues a transport frame (a reply, an error) behind the messages already queued.</summary>
    public bool Enqueue(TFrame frame, int size)
    {
        if (Volatile.Read(ref _closeReason) is not null)
        {
            return false;
        }

        if (Interlocked.Add(ref _queuedBytes, size) > _maxQueuedBytes)
        {
            Interlocked.Add(ref _queuedBytes, -size);
            Close("slow");
            return false;
        }

        if (!_queue.Writer.TryWrite((frame, size)))
        {
            Interlocked.Add(ref _queuedBytes, -size);
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

        if (reason == "slow")
        {
            Observability.GatewayMetrics.SlowConsumerClosed(Transport);
        }

        // Wake the writer: it drops what is queued, says goodbye and closes. If the transport is stuck (the peer
        // stopped reading), the goodbye cannot get out, so the connection is aborted after a grace period.
        _queue.Writer.TryComplete();
        _ = AbortAfterGraceAsync();
    }

    /// <summary>Ends the writer after what is queued has been written (the peer went away or said goodbye).</summary>
    public void Complete() => _queue.Writer.TryComplete();

    /// <summary>Writes queued frames until the queue completes; run once per connection by its transport.</summary>
    public async Task RunWriterAsync(CancellationToken cancellationToken)
    {
        var reader = _queue.Reader;
        try
        {
            while (await reader.WaitToReadAsync(cancellationToken))
            {
                while (Volatile.Read(ref _closeReason) is null && reader.TryRead(out var item))
                {
                    await WriteAsync(item.Frame, moreQueued: reader.TryPeek(out _), cancellationToken);
                    Interlocked.Add(ref _queuedBytes, -item.Size);
                }

                if (Volatile.Read(ref _closeReason) is not null)
                {
                    break;
                }
            }

            if (Volatile.Read(ref _closeReason) is { } reason)
            {
                while (reader.TryRead(out var dropped))
                {
                    Interlocked.Add(ref _queuedBytes, -dropped.Size);
                }

                await CloseTransportAsync(reason, cancellationToken);
            }
        }
        catch (OperationCanceledException)
        {
        }
        catch (Exception ex) when (IsTransportGone(ex))
        {
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

    private async Task AbortAfterGraceAsync()
    {
        await Task.Delay(_closeGrace);
        Abort();
    }
}

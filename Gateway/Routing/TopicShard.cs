using System.Collections.Concurrent;
using System.Threading.Channels;
using OrleansPush.Gateway.Connections;
using OrleansPush.Gateway.Hosting;

namespace OrleansPush.Gateway.Routing;

/// <summary>
/// One fan-out loop and the topics it alone owns (<see cref="TopicState"/>, <see cref="SubscriptionState"/>). Everything
/// here runs on that loop, so no state is shared and nothing locks; the only asynchronous work (grain calls, backoff
/// timers, a connection saying it drained) posts its result back to the loop as a <see cref="ShardCommand"/>.
/// <para>Guarantees per topic and connection: messages in seq order, each at most once (duplicates are dropped by seq);
/// a gap is filled from history before later messages are delivered, or every subscriber that misses it is told; a
/// resume replays history at the pace its connection drains and joins the live flow with no gap or duplicate at the
/// seam; a new epoch is delivered from its seq 1.</para>
/// </summary>
internal sealed class TopicShard
{
    private readonly Channel<Input> _inbox = Channel.CreateUnbounded<Input>(
        new UnboundedChannelOptions { SingleReader = true, SingleWriter = false, AllowSynchronousContinuations = false });

    // Written only by the loop; read by lease renewal from other threads.
    private readonly ConcurrentDictionary<string, LocalTopic> _topics = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Task> _removals = new(StringComparer.Ordinal);
    private readonly TopicGrains _grains;
    private readonly GatewayOptions _options;
    private readonly TopicOptions _topicOptions;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Action<Subscription> _drained;
    private readonly long _maxHeldBytes;
    private int _bounded;
    private long _dropped;

    public TopicShard(TopicGrains grains, GatewayOptions options, TopicOptions topicOptions, TimeProvider time, ILogger logger)
    {
        _grains = grains;
        _options = options;
        _topicOptions = topicOptions;
        _time = time;
        _logger = logger;
        _maxHeldBytes = options.Outbound.LowWater;
        _drained = s => Post(new Drained(s));
    }

    public int Count => _topics.Count;

    public IEnumerable<string> LiveTopicNames => _topics.Values.Where(t => t.State != TopicState.Registering).Select(t => t.Name);

    /// <summary>A stream event. False when the inbox is full and it was dropped (see <see cref="ShardLimits.Inbox"/>).</summary>
    public bool PostEvent(GatewayEvent item)
    {
        if (!TryReserve())
        {
            if (Interlocked.Increment(ref _dropped) % 1000 == 1)
            {
                GatewayLog.ShardInboxFull(_logger, Interlocked.Read(ref _dropped));
            }

            return false;
        }

        _inbox.Writer.TryWrite(new Input(item, null, Bounded: true));
        return true;
    }

    /// <summary>A command from outside the loop that may be refused when the inbox is full: a subscribe then fails with
    /// <c>unavailable</c>; anything else is dropped (a position check or sweep comes again).</summary>
    public void PostBounded(ShardCommand command)
    {
        if (!TryReserve())
        {
            (command as SubscribeCommand)?.Fail(Unavailable("The gateway is overloaded; try again."));
            return;
        }

        _inbox.Writer.TryWrite(new Input(null, command, Bounded: true));
    }

    /// <summary>A command that is never refused: the loop's own results and unsubscribes.</summary>
    public void Post(ShardCommand command) => _inbox.Writer.TryWrite(new Input(null, command, Bounded: false));

    public void Complete() => _inbox.Writer.TryComplete();

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        var reader = _inbox.Reader;
        try
        {
            while (await reader.WaitToReadAsync(cancellationToken))
            {
                while (reader.TryRead(out var input))
                {
                    if (input.Bounded)
                    {
                        Interlocked.Decrement(ref _bounded);
                    }

                    try
                    {
                        Handle(input);
                    }
                    catch (Exception ex)
                    {
                        GatewayLog.ShardCommandFailed(_logger, (input.Event as object ?? input.Command)!.GetType().Name, ex);
                    }
                }
            }
        }
        catch (OperationCanceledException)
        {
        }

        while (reader.TryRead(out var left))
        {
            (left.Command as SubscribeCommand)?.Fail(Unavailable("The gateway is stopping."));
        }
    }

    private bool TryReserve()
    {
        if (Interlocked.Increment(ref _bounded) > ShardLimits.Inbox)
        {
            Interlocked.Decrement(ref _bounded);
            return false;
        }

        return true;
    }

    private void Handle(Input input)
    {
        switch (input.Event)
        {
            case TopicMessage message:
                OnStreamMessage(message);
                return;
            case TopicMessageBatch batch:
                foreach (var m in batch.Messages)
                {
                    OnStreamMessage(m);
                }

                return;
            case PresenceChanged presence:
                OnPresence(presence);
                return;
        }

        switch (input.Command)
        {
            case SubscribeCommand subscribe:
                OnSubscribe(subscribe);
                break;
            case UnsubscribeCommand unsubscribe:
                OnUnsubscribe(unsubscribe);
                break;
            case Registered registered:
                OnRegistered(registered);
                break;
            case FillPageRead read:
                OnFillPageRead(read);
                break;
            case FillRetryDue due when IsCurrent(due.Topic) && due.Topic.State == TopicState.Filling && due.Generation == due.Topic.FillGeneration:
                ReadFill(due.Topic);
                break;
            case CatchUpPageRead read:
                OnCatchUpPageRead(read);
                break;
            case CatchUpRetryDue due when IsCurrent(due.Subscription) && due.Generation == due.Subscription.Generation:
                due.Subscription.Reading = false;
                ReadCatchUp(due.Subscription);
                break;
            case Drained drained when IsCurrent(drained.Subscription) && drained.Subscription.WaitingForRoom:
                drained.Subscription.WaitingForRoom = false;
                Advance(drained.Subscription);
                break;
            case HoldElapsed elapsed when IsCurrent(elapsed.Subscription) && elapsed.Subscription.State == SubscriptionState.Holding:
                StartCatchUp(elapsed.Subscription, null); // released: it joins at once unless its held messages overflowed
                break;
            case PositionCheck check:
                OnPositionCheck(check);
                break;
            case SweepCommand:
                OnSweep();
                break;
        }
    }

    // ---------------------------------------------------------------- the stream and the hot path

    private void OnStreamMessage(TopicMessage message)
    {
        if (!_topics.TryGetValue(message.Topic, out var topic))
        {
            return; // a lingering lease: nobody here wants it
        }

        if (topic.State != TopicState.Live)
        {
            Hold(topic, message);
            return;
        }

        if (message.Epoch != topic.Epoch)
        {
            if (!topic.IsRetired(message.Epoch))
            {
                // A new epoch, or a late event of an old one: the grain's history says which (the fill reads it).
                Hold(topic, message);
                StartFill(topic);
            }

            return;
        }

        if (message.Seq <= topic.Seq)
        {
            return; // already delivered (a duplicate, or read back from history)
        }

        if (message.Seq > topic.Seq + 1)
        {
            Hold(topic, message);
            StartFill(topic);
            return;
        }

        Fanout(topic, new OutboundMessage(message), filling: false);
    }

    private static void Hold(LocalTopic topic, TopicMessage message)
    {
        var held = topic.Held ??= [];
        if (held.Count >= ShardLimits.TopicHeld)
        {
            held.Clear(); // history holds them: the fill reads to its head
        }

        held.Add(message);
    }

    /// <summary>The hot path: one OutboundMessage per message, whose encodings every subscriber shares; nothing is
    /// allocated per subscriber. During a fill, a subscriber whose connection has no room for history catches up at its
    /// own pace instead of overflowing.</summary>
    private void Fanout(LocalTopic topic, OutboundMessage outbound, bool filling)
    {
        var seq = outbound.Message.Seq;
        topic.Seq = seq;
        outbound.Conflate = topic.Conflate;
        if (topic.Delta)
        {
            // The delta source is kept per topic, not per subscriber: each connection decides whether it can use it.
            if (topic.LastFanned is { } previous && previous.Seq == seq - 1 && previous.Epoch == outbound.Message.Epoch)
            {
                outbound.Previous = previous;
            }

            topic.LastFanned = outbound.Message;
        }

        var subscribers = topic.Snapshot;
        Observability.GatewayMetrics.Delivered(subscribers.Length, outbound.Message.PublishedAtUnixMs);
        foreach (var s in subscribers)
        {
            switch (s.State)
            {
                case SubscriptionState.Live when seq > s.LastSeq:
                    if (filling && !s.Connection.HasRoomFor(outbound.EstimatedBytes, s))
                    {
                        BeginHolding(s, SubscriptionState.CatchingUp, from: seq - 1);
                        s.WaitingForRoom = true;
                        HoldFor(s, outbound);
                        break;
                    }

                    Send(s, outbound);
                    break;
                case SubscriptionState.CatchingUp or SubscriptionState.Holding:
                    HoldFor(s, outbound);
                    break;
            }
        }
    }

    /// <summary>Queues a message to a connection. False when the connection takes nothing more. A connection whose
    /// transport cannot encode the message is told (closed with <c>unavailable</c>), and the fan-out goes on.</summary>
    private bool Send(Subscription s, OutboundMessage outbound)
    {
        s.LastSeq = outbound.Message.Seq;
        s.Delivered = true;
        try
        {
            return s.Connection.Deliver(outbound);
        }
        catch (Exception ex)
        {
            if (s.Topic.LastEncodingFailure != outbound.Message.Seq)
            {
                s.Topic.LastEncodingFailure = outbound.Message.Seq;
                GatewayLog.EncodingFailed(_logger, s.Topic.Name, outbound.Message.Seq, s.Connection.Transport, ex);
            }

            s.Connection.Close(WireCodes.Unavailable);
            return false;
        }
    }

    private void HoldFor(Subscription s, OutboundMessage outbound)
    {
        var held = s.Held ??= [];
        var bytes = outbound.EstimatedBytes;
        if (held.Count >= ShardLimits.SubscriptionHeld || s.HeldBytes + bytes > _maxHeldBytes)
        {
            // Too much to hold: history holds these too. The catch-up reads up to here instead.
            held.Clear();
            s.HeldBytes = 0;
            s.HeldFrom = outbound.Message.Seq;
            return;
        }

        held.Add(outbound);
        s.HeldBytes += bytes;
    }

    private static void BeginHolding(Subscription s, SubscriptionState state, long from)
    {
        s.State = state;
        s.Held = [];
        s.HeldBytes = 0;
        s.HeldFrom = from;
    }

    // ---------------------------------------------------------------- filling a topic from history

    private void StartFill(LocalTopic topic)
    {
        if (topic.State == TopicState.Filling)
        {
            return;
        }

        topic.State = TopicState.Filling;
        topic.FillAttempts = 0;
        ReadFill(topic);
    }

    private void ReadFill(LocalTopic topic)
    {
        var generation = ++topic.FillGeneration;
        ReadHistory(topic.Name, topic.Seq, ShardLimits.FillPage, (slice, error) => new FillPageRead(topic, generation, slice, error));
    }

    /// <summary>The one way history is read: a page from the grain, whose result (or failure) comes back to the loop.</summary>
    private void ReadHistory(string topic, long after, int max, Func<HistorySlice?, Exception?, ShardCommand> result) =>
        Read(() => _grains.ReadAsync(topic, after, max), result);

    private void Read(Func<Task<HistorySlice>> read, Func<HistorySlice?, Exception?, ShardCommand> result)
    {
        _ = ReadAsync();

        async Task ReadAsync()
        {
            try
            {
                Post(result(await read(), null));
            }
            catch (Exception ex)
            {
                Post(result(null, ex));
            }
        }
    }

    private void OnFillPageRead(FillPageRead read)
    {
        var topic = read.Topic;
        if (!IsCurrent(topic) || topic.State != TopicState.Filling || read.Generation != topic.FillGeneration)
        {
            return;
        }

        if (read.Slice is not { } slice || topic.IsRetired(slice.Epoch))
        {
            // The grain is unreachable (or answered from an epoch it has left): try again, for as long as it takes.
            var attempt = topic.FillAttempts++;
            if (attempt == 0 || attempt % 10 == 0)
            {
                GatewayLog.GapFillFailed(_logger, topic.Name, attempt + 1, read.Error);
            }

            var generation = topic.FillGeneration;
            After(ShardLimits.Backoff(attempt), new FillRetryDue(topic, generation));
            return;
        }

        topic.FillAttempts = 0;
        if (slice.Epoch != topic.Epoch)
        {
            SwitchEpoch(topic, slice.Epoch);
            ReadFill(topic);
            return;
        }

        if (slice.FirstAvailable > topic.Seq + 1 && slice.Head > topic.Seq)
        {
            var to = Math.Min(slice.FirstAvailable - 1, slice.Head);
            EndSubscriptionsMissing(topic, topic.Seq + 1, to);
            topic.Seq = to;
        }

        foreach (var m in slice.Messages)
        {
            if (m.Seq == topic.Seq + 1)
            {
                Fanout(topic, new OutboundMessage(m), filling: true);
            }
        }

        if (topic.Seq < slice.Head && slice.Messages.Length > 0)
        {
            ReadFill(topic);
            return;
        }

        FinishFill(topic);
    }

    /// <summary>The topic is at the head of history: it is live, its held messages are handled (those of another epoch
    /// are late events of an old one: the fill just read the grain's current epoch), and catch-ups that waited for the
    /// topic's epoch go on.</summary>
    private void FinishFill(LocalTopic topic)
    {
        topic.State = TopicState.Live;
        ReleaseHeld(topic, epochVerified: true);
        foreach (var s in topic.Snapshot)
        {
            if (s.AwaitingTopic && topic.State == TopicState.Live)
            {
                s.AwaitingTopic = false;
                Advance(s);
            }
        }
    }

    private void ReleaseHeld(LocalTopic topic, bool epochVerified)
    {
        var held = topic.Held;
        topic.Held = null;
        if (held is null)
        {
            return;
        }

        foreach (var m in held)
        {
            if (epochVerified && m.Epoch != topic.Epoch && topic.State == TopicState.Live)
            {
                topic.Retire(m.Epoch);
                continue;
            }

            OnStreamMessage(m); // in order: a gap or another epoch starts a fill, and the rest is held again
        }
    }

    /// <summary>The grain is in another epoch: its history was lost. Everything here starts over in the new epoch from
    /// seq 0, so its seq 1 is delivered; the changed epoch in <c>msg</c> tells clients the old tail may be gone.</summary>
    private void SwitchEpoch(LocalTopic topic, string epoch)
    {
        GatewayLog.EpochChanged(_logger, topic.Name, topic.Epoch, epoch);
        topic.Retire(topic.Epoch);
        topic.Epoch = epoch;
        topic.Seq = 0;
        topic.SeqAtLastCheck = -1;
        if (topic.Held is { } held)
        {
            held.RemoveAll(m => m.Epoch != epoch);
        }

        foreach (var s in topic.Snapshot)
        {
            s.LastSeq = 0;
            s.ContiguousFrom = 0;
            s.Delivered = false;
            switch (s.State)
            {
                case SubscriptionState.Holding:
                    BeginHolding(s, SubscriptionState.Holding, from: 0);
                    break;
                case SubscriptionState.CatchingUp:
                    BeginHolding(s, SubscriptionState.CatchingUp, from: 0);
                    if (s.Since is not null)
                    {
                        s.NeedsOrigin = true; // the resume's since is judged again against the new epoch
                    }

                    s.Generation++;
                    s.Page = null;
                    s.Reading = false;
                    s.AwaitingTopic = true; // goes on when the fill is done
                    break;
            }
        }
    }

    /// <summary>History no longer holds <paramref name="from"/>..<paramref name="to"/>: every live subscriber that
    /// missed them is told, and its subscription ends (catch-ups find the gap in their own reads).</summary>
    private void EndSubscriptionsMissing(LocalTopic topic, long from, long to)
    {
        GatewayLog.GapUnfillable(_logger, topic.Name, from, to);
        foreach (var s in topic.Snapshot)
        {
            if (s.State == SubscriptionState.Live && s.LastSeq < to)
            {
                EndSubscription(s, WireCodes.InsufficientState);
            }
        }
    }

    private void EndSubscription(Subscription s, string code)
    {
        var topic = s.Topic;
        RemoveSubscription(topic, s);
        s.Connection.EndTopic(topic.Name);
        try
        {
            s.Connection.SubscriptionEnded(topic.Name, code);
        }
        catch (Exception ex)
        {
            GatewayLog.ShardCommandFailed(_logger, nameof(PushConnection.SubscriptionEnded), ex);
        }
    }

    private void OnPositionCheck(PositionCheck check)
    {
        if (!_topics.TryGetValue(check.Topic, out var topic) || topic.State != TopicState.Live)
        {
            return;
        }

        var position = check.Position;
        if (position.Epoch != topic.Epoch)
        {
            if (!topic.IsRetired(position.Epoch))
            {
                StartFill(topic); // the grain started a new epoch whose messages never came here
            }

            return;
        }

        // Behind the grain and no progress since the last check: the topic went quiet with its tail stranded (a stream
        // event lost). Merely behind is normal under load: the messages are still on their way.
        var stalled = topic.Seq == topic.SeqAtLastCheck;
        topic.SeqAtLastCheck = topic.Seq;
        if (position.Seq > topic.Seq && stalled)
        {
            StartFill(topic);
        }
    }

    // ---------------------------------------------------------------- subscribing and registering a topic

    private void OnSubscribe(SubscribeCommand request)
    {
        if (request.Connection.IsGone)
        {
            request.Fail(Unavailable("The connection is closing."));
            return;
        }

        if (!_topics.TryGetValue(request.Topic, out var topic))
        {
            var ns = _topicOptions.For(request.Topic);
            topic = new LocalTopic(request.Topic, ns.Presence, ns.Delta, ns.Conflate);
            _topics[request.Topic] = topic;
            Register(topic);
        }

        topic.EmptySince = 0;
        if (topic.State == TopicState.Registering)
        {
            var waiting = topic.Waiting ??= [];
            if (waiting.Count >= ShardLimits.Waiting)
            {
                request.Fail(Unavailable("The topic is busy; try again."));
                return;
            }

            waiting.Add(request);
            return;
        }

        Activate(topic, request);
    }

    private void Register(LocalTopic topic)
    {
        _removals.Remove(topic.Name, out var removal);
        _ = RegisterAsync();

        async Task RegisterAsync()
        {
            try
            {
                if (removal is not null)
                {
                    // The lease being dropped must be gone before it is taken again, or the drop could land last.
                    await removal.ContinueWith(static _ => { }, TaskScheduler.Default);
                }

                Post(new Registered(topic, await _grains.AddInterestAsync(topic.Name), null));
            }
            catch (Exception ex)
            {
                Post(new Registered(topic, null, ex));
            }
        }
    }

    private void OnRegistered(Registered registered)
    {
        var topic = registered.Topic;
        if (!IsCurrent(topic))
        {
            return;
        }

        var waiting = topic.Waiting ?? [];
        topic.Waiting = null;
        if (registered.Position is not { } position)
        {
            _topics.TryRemove(topic.Name, out _);
            var error = registered.Error as PushRejectedException ?? Unavailable("The topic could not be reached; try again.");
            GatewayLog.RegisterFailed(_logger, topic.Name, registered.Error);
            foreach (var request in waiting)
            {
                request.Fail(error);
            }

            return;
        }

        topic.State = TopicState.Live;
        topic.Epoch = position.Epoch;
        topic.Seq = position.Seq;
        foreach (var request in waiting)
        {
            Activate(topic, request);
        }

        ReleaseHeld(topic, epochVerified: false);
        if (topic.Subscribers.Count == 0)
        {
            topic.EmptySince = _time.GetTimestamp();
        }
    }

    private void Activate(LocalTopic topic, SubscribeCommand request)
    {
        if (request.Connection.IsGone)
        {
            // It went away while the topic registered: it is never subscribed (its teardown has already run).
            request.Fail(Unavailable("The connection is closing."));
            return;
        }

        if (!topic.Subscribers.TryGetValue(request.Connection, out var s))
        {
            s = new Subscription(topic, request.Connection, _drained) { LastSeq = topic.Seq, ContiguousFrom = topic.Seq };
            topic.Subscribers.Add(request.Connection, s);
            topic.Changed();
            CountMember(topic, request.Connection, +1);
            if (request.Hold && !request.Resumes && _options.AutoSubscriptionHold > TimeSpan.Zero)
            {
                BeginHolding(s, SubscriptionState.Holding, from: topic.Seq);
                _ = HoldAsync(s);
            }
        }

        s.WantsPresence |= request.PresenceEvents && topic.Members is not null;
        request.Admitted.TrySetResult();
        if (request.Resumes || (s.State == SubscriptionState.Holding && !request.Hold))
        {
            // A resume, or the client's own subscribe claiming a held automatic subscription (its held messages follow).
            StartCatchUp(s, request);
            return;
        }

        request.Completion.TrySetResult(new SubscribeResult(topic.Epoch, s.State == SubscriptionState.Live ? s.LastSeq : topic.Seq, null));
    }

    private async Task HoldAsync(Subscription s)
    {
        await Task.Delay(_options.AutoSubscriptionHold, _time);
        Post(new HoldElapsed(s));
    }

    // ---------------------------------------------------------------- catching up: flow-controlled replay

    /// <summary>Starts (or restarts, for a newer request) a catch-up. What the connection already has is kept: it never
    /// gets a seq twice nor goes back.</summary>
    private void StartCatchUp(Subscription s, SubscribeCommand? request)
    {
        if (s.Request is { } earlier && !ReferenceEquals(earlier, request))
        {
            earlier.Cancel();
        }

        if (s.State is SubscriptionState.Live or SubscriptionState.Closed)
        {
            BeginHolding(s, SubscriptionState.CatchingUp, from: s.Topic.Seq);
        }

        s.State = SubscriptionState.CatchingUp;
        s.Request = request;
        s.Since = request?.Since;
        s.Last = request?.Last ?? 0;
        s.Latest = request?.Latest == true;
        s.NeedsOrigin = request?.Resumes == true;
        s.Recovered = request?.Since is null ? null : true;
        s.Generation++;
        s.Page = null;
        s.Reading = false;
        s.AwaitingTopic = false;
        s.Attempts = 0;
        Advance(s);
    }

    /// <summary>Queues what it can of the page read, as long as the connection has room; then joins live, or reads the
    /// next page. Called again when a page arrives and when the connection drains.</summary>
    private void Advance(Subscription s)
    {
        if (s.State != SubscriptionState.CatchingUp || s.Reading || s.WaitingForRoom || s.AwaitingTopic)
        {
            return;
        }

        if (s.Page is { } page)
        {
            var messages = page.Messages;
            while (s.PageIndex < messages.Length)
            {
                var m = messages[s.PageIndex];
                if (m.Seq <= s.LastSeq)
                {
                    s.PageIndex++;
                    continue;
                }

                if (m.Seq > s.LastSeq + 1 && !MissedInCatchUp(s, s.LastSeq + 1, m.Seq - 1))
                {
                    return;
                }

                if (!s.Connection.HasRoomFor(OutboundMessage.EstimateBytes(m), s))
                {
                    s.WaitingForRoom = true;
                    return;
                }

                s.PageIndex++;
                if (!Send(s, new OutboundMessage(m) { Replayed = true }))
                {
                    Stop(s);
                    return;
                }
            }

            s.Page = null;
            if (messages.Length == 0 && !s.NeedsOrigin && s.LastSeq < s.HeldFrom)
            {
                // History ends before what is held: only a store that lost what it had acknowledged does this.
                if (!MissedInCatchUp(s, s.LastSeq + 1, s.HeldFrom))
                {
                    return;
                }

                s.LastSeq = s.HeldFrom;
            }
        }

        if (!s.NeedsOrigin && s.LastSeq >= s.HeldFrom)
        {
            Join(s);
            return;
        }

        ReadCatchUp(s);
    }

    private void ReadCatchUp(Subscription s)
    {
        var topic = s.Topic;
        if (s.State != SubscriptionState.CatchingUp || s.Reading)
        {
            return;
        }

        long after;
        if (!s.NeedsOrigin)
        {
            after = s.LastSeq;
        }
        else if (s.Since is { } since)
        {
            // A since of another epoch: this epoch is replayed from its start (what the connection has aside).
            var from = since.Epoch == topic.Epoch ? since.Seq : 0;
            after = s.Delivered ? Math.Max(s.LastSeq, from) : from;
        }
        else if (s.Latest)
        {
            // The topic's latest value, which may be older than its head, in place of a first page of history.
            s.Reading = true;
            var latestGeneration = s.Generation;
            Read(() => _grains.ReadLatestAsync(topic.Name), (slice, error) => new CatchUpPageRead(s, latestGeneration, slice, error));
            return;
        }
        else
        {
            var from = Math.Max(0, topic.Seq - s.Last);
            after = s.Delivered ? Math.Max(s.LastSeq, from) : from;
        }

        s.Reading = true;
        var generation = s.Generation;
        ReadHistory(topic.Name, after, s.PageSize, (slice, error) => new CatchUpPageRead(s, generation, slice, error));
    }

    private void OnCatchUpPageRead(CatchUpPageRead read)
    {
        var s = read.Subscription;
        if (!IsCurrent(s) || s.State != SubscriptionState.CatchingUp || read.Generation != s.Generation)
        {
            return;
        }

        s.Reading = false;
        var topic = s.Topic;
        if (read.Slice is not { } slice || topic.IsRetired(slice.Epoch))
        {
            CatchUpReadFailed(s, read.Error);
            return;
        }

        if (slice.Epoch != topic.Epoch)
        {
            // History is in an epoch this topic has not switched to yet: the topic's fill decides, then this goes on.
            s.AwaitingTopic = true;
            if (topic.State == TopicState.Live)
            {
                StartFill(topic);
            }

            return;
        }

        s.Attempts = 0;
        if (s.NeedsOrigin)
        {
            var latest = s.Latest && s.Since is null;
            ApplyOrigin(s, slice);
            if (latest)
            {
                SendLatest(s, slice);
                return;
            }
        }

        if (slice.Messages.Length > 0)
        {
            var bytes = slice.Messages.Sum(m => (long)OutboundMessage.EstimateBytes(m));
            s.PageSize = (int)Math.Clamp(_options.Outbound.HighWater * slice.Messages.Length / Math.Max(1, bytes), ShardLimits.MinPage, ShardLimits.MaxPage);
        }

        s.Page = slice;
        s.PageIndex = 0;
        Advance(s);
    }

    /// <summary>A subscribe without <c>since</c> where the namespace keeps a latest value: that value goes first (marked
    /// <see cref="OutboundMessage.Retained"/>), then the subscription goes on from the topic's position as any subscribe
    /// without <c>since</c> does: the messages between the latest value and the head are not replayed.</summary>
    private void SendLatest(Subscription s, HistorySlice slice)
    {
        var from = s.LastSeq;
        if (slice.Messages is [var latest] && !s.Delivered)
        {
            if (!Send(s, new OutboundMessage(latest) { Replayed = true, Retained = true }))
            {
                Stop(s);
                return;
            }

            s.LastSeq = Math.Max(from, latest.Seq);
            s.ContiguousFrom = Math.Max(s.ContiguousFrom, s.LastSeq);
        }

        s.Page = null;
        Advance(s);
    }

    /// <summary>The first page says where history stands: where the resume starts, and whether it can be complete.</summary>
    private static void ApplyOrigin(Subscription s, HistorySlice slice)
    {
        s.NeedsOrigin = false;
        long from;
        if (s.Since is { } since)
        {
            if (since.Epoch != slice.Epoch)
            {
                s.Recovered = false; // the old epoch's tail may be gone; this epoch is replayed from what history has
                from = s.Delivered ? s.LastSeq : 0;
            }
            else
            {
                // A connection never gets a seq twice, nor one out of order: one that already received messages on this
                // topic resumes from whichever is later, what it asked for or what it already has, and what it missed
                // before it joined live cannot be sent any more (recovered: false says so).
                var missedBeforeJoining = s.Delivered && since.Seq < s.ContiguousFrom;
                var reach = Math.Max(since.Seq, s.Delivered ? s.LastSeq : 0);
                s.Recovered = !missedBeforeJoining && slice.FirstAvailable <= reach + 1 && since.Seq <= slice.Head;
                from = Math.Min(since.Seq, slice.Head);
            }
        }
        else
        {
            from = Math.Max(0, Math.Min(slice.Head, s.Topic.Seq) - s.Last);
        }

        if (s.Delivered)
        {
            s.LastSeq = Math.Max(s.LastSeq, from);
        }
        else
        {
            s.LastSeq = from;
            s.ContiguousFrom = Math.Max(from, slice.FirstAvailable - 1);
        }
    }

    private void CatchUpReadFailed(Subscription s, Exception? error)
    {
        var attempt = s.Attempts++;
        if (s.Request is not null && attempt + 1 >= ShardLimits.ResumeReadAttempts)
        {
            // A resume waits for its answer: say honestly that the gap was not filled, and go live from what is held.
            GatewayLog.ReplayFailed(_logger, s.Topic.Name, error);
            if (!MissedInCatchUp(s, s.LastSeq + 1, s.HeldFrom))
            {
                return;
            }

            s.NeedsOrigin = false;
            s.LastSeq = Math.Max(s.LastSeq, s.HeldFrom);
            Join(s);
            return;
        }

        if (attempt == 0 || attempt % 10 == 0)
        {
            GatewayLog.CatchUpReadFailed(_logger, s.Topic.Name, attempt + 1, error);
        }

        s.Reading = true; // the retry counts as the read in flight: nothing else starts one meanwhile
        After(ShardLimits.Backoff(attempt), new CatchUpRetryDue(s, s.Generation));
    }

    /// <summary>A catch-up cannot have <paramref name="from"/>..<paramref name="to"/>. A resume says so in its answer
    /// (<c>recovered:false</c>) and goes on; a subscription nobody asked to resume ends, told. True to go on.</summary>
    private bool MissedInCatchUp(Subscription s, long from, long to)
    {
        if (s.Request is null)
        {
            GatewayLog.GapUnfillable(_logger, s.Topic.Name, from, to);
            EndSubscription(s, WireCodes.InsufficientState);
            return false;
        }

        if (s.Since is not null)
        {
            s.Recovered = false;
        }

        s.ContiguousFrom = to;
        return true;
    }

    /// <summary>Caught up: the held messages follow (when the connection has room for them) and the subscription is
    /// live; only now is its <c>sub</c> answered, so the answer comes after the replay.</summary>
    private void Join(Subscription s)
    {
        if (s.Held is { Count: > 0 } && !s.Connection.HasRoomFor((int)Math.Min(s.HeldBytes, int.MaxValue), s))
        {
            s.WaitingForRoom = true;
            return;
        }

        var held = s.Held;
        s.State = SubscriptionState.Live;
        s.Held = null;
        s.HeldBytes = 0;
        foreach (var m in held ?? [])
        {
            var seq = m.Message.Seq;
            if (seq <= s.LastSeq)
            {
                continue;
            }

            if (seq > s.LastSeq + 1 && !MissedInCatchUp(s, s.LastSeq + 1, seq - 1))
            {
                return;
            }

            if (!Send(s, m))
            {
                Stop(s);
                return;
            }
        }

        Answer(s);
    }

    /// <summary>The connection takes nothing more (closing; a long poll that is full): the subscription delivers nothing
    /// from now on, and a pending <c>sub</c> is answered with where it got (a poll needs that answer).</summary>
    private void Stop(Subscription s)
    {
        s.State = SubscriptionState.Closed;
        s.Held = null;
        s.HeldBytes = 0;
        s.Page = null;
        Answer(s);
    }

    private void Answer(Subscription s)
    {
        if (s.Request is not { } request)
        {
            return;
        }

        s.Request = null;
        if (s.Recovered is { } outcome)
        {
            Observability.GatewayMetrics.Recovery(outcome);
        }

        request.Completion.TrySetResult(new SubscribeResult(s.Topic.Epoch, s.LastSeq, s.Recovered));
    }

    // ---------------------------------------------------------------- unsubscribing, leases, presence

    private void OnUnsubscribe(UnsubscribeCommand request)
    {
        if (!_topics.TryGetValue(request.Topic, out var topic))
        {
            return;
        }

        topic.Waiting?.RemoveAll(w =>
        {
            if (w.Connection != request.Connection)
            {
                return false;
            }

            w.Cancel();
            return true;
        });

        if (topic.Subscribers.TryGetValue(request.Connection, out var s))
        {
            RemoveSubscription(topic, s);
        }
    }

    private void RemoveSubscription(LocalTopic topic, Subscription s)
    {
        topic.Subscribers.Remove(s.Connection);
        topic.Changed();
        s.State = SubscriptionState.Closed;
        s.Held = null;
        s.Page = null;
        s.Generation++;
        s.Request?.Cancel();
        s.Request = null;
        CountMember(topic, s.Connection, -1);
        if (topic.Subscribers.Count == 0 && topic.EmptySince == 0)
        {
            topic.EmptySince = _time.GetTimestamp();
        }
    }

    private void OnSweep()
    {
        var linger = _options.EmptyTopicLinger;
        foreach (var topic in _topics.Values)
        {
            // A filling topic nobody follows goes too (its fill's results are then ignored, which ends its retries).
            if (topic.State != TopicState.Registering && topic.Subscribers.Count == 0 && topic.Waiting is null && topic.EmptySince != 0
                && _time.GetElapsedTime(topic.EmptySince) >= linger)
            {
                _topics.TryRemove(topic.Name, out _);
                _removals[topic.Name] = RemoveAsync(topic.Name);
            }
        }

        foreach (var done in _removals.Where(r => r.Value.IsCompleted).Select(r => r.Key).ToArray())
        {
            _removals.Remove(done);
        }
    }

    private async Task RemoveAsync(string topic)
    {
        try
        {
            await _grains.RemoveInterestAsync(topic);
        }
        catch (Exception ex)
        {
            // The lease lapses by itself; this only makes it go sooner.
            GatewayLog.RemoveInterestFailed(_logger, topic, ex);
        }
    }

    /// <summary>Keeps the topic's local member counts and reports a member's new count to the grain.</summary>
    private void CountMember(LocalTopic topic, PushConnection connection, int delta)
    {
        if (topic.Members is not { } members)
        {
            return;
        }

        var member = connection.UserId ?? string.Empty;
        var count = members.GetValueOrDefault(member) + delta;
        if (count > 0)
        {
            members[member] = count;
        }
        else
        {
            members.Remove(member);
        }

        _ = ReportAsync();

        async Task ReportAsync()
        {
            try
            {
                await _grains.ReportPresenceAsync(topic.Name, member, Math.Max(0, count));
            }
            catch (Exception ex)
            {
                GatewayLog.PresenceReportFailed(_logger, topic.Name, ex);
            }
        }
    }

    private void OnPresence(PresenceChanged change)
    {
        if (!_topics.TryGetValue(change.Topic, out var topic))
        {
            return;
        }

        foreach (var s in topic.Snapshot)
        {
            if (s.WantsPresence && s.State != SubscriptionState.Closed)
            {
                s.Connection.DeliverPresence(change);
            }
        }
    }

    // ---------------------------------------------------------------- helpers

    private bool IsCurrent(LocalTopic topic) => _topics.TryGetValue(topic.Name, out var current) && current == topic;

    private bool IsCurrent(Subscription s) =>
        IsCurrent(s.Topic) && s.Topic.Subscribers.TryGetValue(s.Connection, out var current) && current == s;

    private void After(TimeSpan delay, ShardCommand command)
    {
        _ = DelayAsync();

        async Task DelayAsync()
        {
            await Task.Delay(delay, _time);
            Post(command);
        }
    }

    private static PushRejectedException Unavailable(string message) => new(WireCodes.Unavailable, message);

    /// <summary>What the inbox holds: a stream event as it came, or a command. <see cref="Bounded"/> ones count against
    /// <see cref="ShardLimits.Inbox"/>.</summary>
    private readonly record struct Input(GatewayEvent? Event, ShardCommand? Command, bool Bounded);
}

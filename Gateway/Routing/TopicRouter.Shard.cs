using System.Collections.Concurrent;
using System.Threading.Channels;
using OrleansPush.Gateway.Connections;

namespace OrleansPush.Gateway.Routing;

public sealed partial class TopicRouter
{
    /// <summary>One fan-out loop and the topics it alone owns. Everything in here runs on that loop, so no state is
    /// shared and nothing locks; the only asynchronous work (grain calls) posts its result back to the loop.</summary>
    private sealed class Shard(TopicRouter router)
    {
        private readonly Channel<object> _inbox = Channel.CreateUnbounded<object>(
            new UnboundedChannelOptions { SingleReader = true, SingleWriter = false, AllowSynchronousContinuations = false });

        // Written only by the loop; read by lease renewal from other threads.
        private readonly ConcurrentDictionary<string, LocalTopic> _topics = new(StringComparer.Ordinal);
        private readonly Dictionary<string, Task> _removals = new(StringComparer.Ordinal);

        public int Count => _topics.Count;

        public IEnumerable<string> LiveTopicNames => _topics.Values.Where(t => t.Live).Select(t => t.Name);

        public void Post(object command) => _inbox.Writer.TryWrite(command);

        public void Complete() => _inbox.Writer.TryComplete();

        public async Task RunAsync(CancellationToken cancellationToken)
        {
            var reader = _inbox.Reader;
            try
            {
                while (await reader.WaitToReadAsync(cancellationToken))
                {
                    while (reader.TryRead(out var command))
                    {
                        try
                        {
                            Handle(command);
                        }
                        catch (Exception ex)
                        {
                            GatewayLog.ShardCommandFailed(router._logger, command.GetType().Name, ex);
                        }
                    }
                }
            }
            catch (OperationCanceledException)
            {
            }

            while (reader.TryRead(out var left))
            {
                if (left is SubscribeCommand s)
                {
                    s.Completion.TrySetException(Unavailable("The gateway is stopping."));
                }
            }
        }

        private void Handle(object command)
        {
            switch (command)
            {
                case TopicMessage message:
                    OnMessage(message);
                    break;
                case TopicMessageBatch batch:
                    foreach (var m in batch.Messages)
                    {
                        OnMessage(m);
                    }

                    break;
                case SubscribeCommand subscribe:
                    OnSubscribe(subscribe);
                    break;
                case UnsubscribeCommand unsubscribe:
                    OnUnsubscribe(unsubscribe);
                    break;
                case Registered registered:
                    OnRegistered(registered);
                    break;
                case HistoryLoaded loaded:
                    OnHistoryLoaded(loaded);
                    break;
                case GapLoaded gap:
                    OnGapLoaded(gap);
                    break;
                case PositionCheck check:
                    OnPositionCheck(check);
                    break;
                case HoldElapsed elapsed:
                    OnHoldElapsed(elapsed);
                    break;
                case SweepCommand:
                    OnSweep();
                    break;
                case PresenceChanged presence:
                    OnPresence(presence);
                    break;
            }
        }

        private void OnMessage(TopicMessage message)
        {
            if (!_topics.TryGetValue(message.Topic, out var topic))
            {
                return; // A lingering lease: nobody here wants it.
            }

            if (!topic.Live || topic.FillingGap)
            {
                (topic.Held ??= []).Add(message);
                return;
            }

            if (message.Epoch != topic.Epoch)
            {
                // The grain lost its history and started a new epoch: positions of the old one mean nothing now.
                GatewayLog.EpochChanged(router._logger, topic.Name, topic.Epoch, message.Epoch);
                topic.Epoch = message.Epoch;
                topic.Seq = message.Seq - 1;
                foreach (var s in topic.Snapshot)
                {
                    s.LastSeq = topic.Seq;
                    s.ContiguousFrom = topic.Seq;
                }
            }

            if (message.Seq <= topic.Seq)
            {
                return; // Already delivered (a duplicate or a message read back from history).
            }

            if (message.Seq > topic.Seq + 1)
            {
                StartGapFill(topic, message);
                return;
            }

            Fanout(topic, message);
        }

        /// <summary>The hot path: one OutboundMessage per message, whose encodings every subscriber shares.</summary>
        private static void Fanout(LocalTopic topic, TopicMessage message)
        {
            topic.Seq = message.Seq;
            var outbound = new OutboundMessage(message);
            Observability.GatewayMetrics.Delivered(topic.Snapshot.Length, message.PublishedAtUnixMs);
            foreach (var s in topic.Snapshot)
            {
                if (s.Held is { } held)
                {
                    held.Add(outbound);
                }
                else if (message.Seq > s.LastSeq)
                {
                    s.LastSeq = message.Seq;
                    s.Delivered = true;
                    s.Connection.Deliver(outbound);
                }
            }
        }

        private void StartGapFill(LocalTopic topic, TopicMessage? first)
        {
            topic.FillingGap = true;
            if (first is not null)
            {
                (topic.Held ??= []).Add(first);
            }

            var from = topic.Seq;
            _ = LoadAsync();

            async Task LoadAsync()
            {
                try
                {
                    var slice = await router.Grain(topic.Name).ReadAsync(from, MaxReplay);
                    Post(new GapLoaded(topic, slice, null));
                }
                catch (Exception ex)
                {
                    Post(new GapLoaded(topic, null, ex));
                }
            }
        }

        private void OnGapLoaded(GapLoaded gap)
        {
            var topic = gap.Topic;
            if (!_topics.TryGetValue(topic.Name, out var current) || current != topic)
            {
                return;
            }

            topic.FillingGap = false;
            if (gap.Slice is { } slice && slice.Epoch == topic.Epoch)
            {
                if (slice.FirstAvailable > topic.Seq + 1)
                {
                    GatewayLog.GapUnfillable(router._logger, topic.Name, topic.Seq + 1, slice.FirstAvailable - 1);
                }

                foreach (var m in slice.Messages)
                {
                    if (m.Seq > topic.Seq)
                    {
                        Fanout(topic, m);
                    }
                }
            }
            else if (gap.Error is not null)
            {
                GatewayLog.GapFillFailed(router._logger, topic.Name, gap.Error);
            }

            ReleaseHeld(topic);
        }

        private void ReleaseHeld(LocalTopic topic)
        {
            var held = topic.Held;
            topic.Held = null;
            if (held is null)
            {
                return;
            }

            foreach (var m in held)
            {
                if (topic.FillingGap)
                {
                    (topic.Held ??= []).Add(m);
                }
                else if (m.Epoch != topic.Epoch || m.Seq <= topic.Seq + 1)
                {
                    OnMessage(m);
                }
                else
                {
                    // Still a gap after reading history: what is not there cannot be filled. Deliver on from here.
                    GatewayLog.GapUnfillable(router._logger, topic.Name, topic.Seq + 1, m.Seq - 1);
                    Fanout(topic, m);
                }
            }
        }

        private void OnPositionCheck(PositionCheck check)
        {
            if (!_topics.TryGetValue(check.Topic, out var topic) || !topic.Live || topic.FillingGap)
            {
                return;
            }

            // Behind the grain and no progress since the last check: the topic went quiet with its tail stranded (a
            // stream event lost). Merely behind is normal under load: the messages are still on their way.
            var stalled = topic.Seq == topic.SeqAtLastCheck;
            topic.SeqAtLastCheck = topic.Seq;
            if (check.Position.Epoch == topic.Epoch && check.Position.Seq > topic.Seq && stalled)
            {
                StartGapFill(topic, null);
            }
        }

        private void OnSubscribe(SubscribeCommand request)
        {
            if (!_topics.TryGetValue(request.Topic, out var topic))
            {
                topic = new LocalTopic(request.Topic, router._topicOptions.For(request.Topic).Presence);
                _topics[request.Topic] = topic;
                Register(topic);
            }

            topic.EmptySince = 0;
            if (!topic.Live)
            {
                (topic.Waiting ??= []).Add(request);
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

                    var position = await router.Grain(topic.Name).AddInterestAsync(router._identity.Id);
                    Post(new Registered(topic, position, null));
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
            if (!_topics.TryGetValue(topic.Name, out var current) || current != topic)
            {
                return;
            }

            var waiting = topic.Waiting ?? [];
            topic.Waiting = null;
            if (registered.Position is not { } position)
            {
                _topics.TryRemove(topic.Name, out _);
                var error = registered.Error is PushRejectedException rejected ? rejected : Unavailable("The topic could not be reached; try again.");
                GatewayLog.RegisterFailed(router._logger, topic.Name, registered.Error);
                foreach (var request in waiting)
                {
                    request.Completion.TrySetException(error);
                }

                return;
            }

            topic.Live = true;
            topic.Epoch = position.Epoch;
            topic.Seq = position.Seq;
            foreach (var request in waiting)
            {
                Activate(topic, request);
            }

            ReleaseHeld(topic);
            if (topic.Subscribers.Count == 0)
            {
                topic.EmptySince = router._time.GetTimestamp();
            }
        }

        private void Activate(LocalTopic topic, SubscribeCommand request)
        {
            if (!topic.Subscribers.TryGetValue(request.Connection, out var sub))
            {
                sub = new Subscription(request.Connection) { LastSeq = topic.Seq, ContiguousFrom = topic.Seq };
                topic.Subscribers.Add(request.Connection, sub);
                topic.Changed();
                CountMember(topic, request.Connection, +1);
                if (request.Hold && request.Since is null && request.Last <= 0)
                {
                    sub.Held = [];
                    sub.Claimable = true;
                    _ = HoldAsync(topic, sub);
                }
            }
            else if (sub.Claimable && !request.Hold)
            {
                // The client subscribed to a topic it already had from connecting: a resume takes the held messages
                // over (replayed history first, then these); a plain subscribe releases them now.
                sub.Claimable = false;
                if (request.Since is null && request.Last <= 0)
                {
                    Release(sub);
                }
            }

            sub.WantsPresence |= request.PresenceEvents && topic.Members is not null;

            if (request.Since is null && request.Last <= 0)
            {
                request.Completion.TrySetResult(new SubscribeResult(topic.Epoch, sub.Held is null ? sub.LastSeq : topic.Seq, null));
                return;
            }

            // Resume: hold live messages back while history is read, then replay and release them in seq order.
            sub.Held ??= [];
            var generation = ++sub.Generation;
            _ = LoadAsync();

            async Task LoadAsync()
            {
                try
                {
                    var grain = router.Grain(topic.Name);
                    var slice = request.Since is { } since
                        ? await grain.ReadAsync(Math.Max(0, since.Seq), MaxReplay)
                        : await grain.ReadLastAsync(Math.Min(request.Last, MaxReplay));
                    Post(new HistoryLoaded(topic, sub, generation, request, slice, null));
                }
                catch (Exception ex)
                {
                    Post(new HistoryLoaded(topic, sub, generation, request, null, ex));
                }
            }
        }

        private async Task HoldAsync(LocalTopic topic, Subscription sub)
        {
            await Task.Delay(router._options.AutoSubscriptionHold, router._time);
            Post(new HoldElapsed(topic, sub));
        }

        private void OnHoldElapsed(HoldElapsed elapsed)
        {
            var (topic, sub) = (elapsed.Topic, elapsed.Subscription);
            if (sub.Claimable && _topics.TryGetValue(topic.Name, out var current) && current == topic
                && topic.Subscribers.TryGetValue(sub.Connection, out var live) && live == sub)
            {
                sub.Claimable = false;
                Release(sub);
            }
        }

        /// <summary>Sends what a claimable subscription held, in seq order, and makes it live.</summary>
        private static void Release(Subscription sub)
        {
            var held = sub.Held ?? [];
            sub.Held = null;
            DeliverNewer(sub, held);
        }

        /// <summary>Sends the held messages the connection does not have yet (seq above its last), in order.</summary>
        private static void DeliverNewer(Subscription sub, List<OutboundMessage> held)
        {
            foreach (var m in held)
            {
                if (m.Message.Seq > sub.LastSeq)
                {
                    sub.LastSeq = m.Message.Seq;
                    sub.Delivered = true;
                    sub.Connection.Deliver(m);
                }
            }
        }

        private void OnHistoryLoaded(HistoryLoaded loaded)
        {
            var (topic, sub, request) = (loaded.Topic, loaded.Subscription, loaded.Request);
            if (!_topics.TryGetValue(topic.Name, out var current) || current != topic
                || !topic.Subscribers.TryGetValue(sub.Connection, out var live) || live != sub || sub.Generation != loaded.Generation)
            {
                request.Completion.TrySetCanceled();
                return;
            }

            var held = sub.Held ?? [];
            sub.Held = null;
            bool? recovered = null;
            if (loaded.Slice is not { } slice)
            {
                // History could not be read: go live from here and say the gap was not filled.
                GatewayLog.ReplayFailed(router._logger, topic.Name, loaded.Error);
                recovered = request.Since is null ? null : false;
                sub.LastSeq = Math.Max(sub.LastSeq, topic.Seq - held.Count);
                sub.ContiguousFrom = sub.Delivered ? sub.ContiguousFrom : sub.LastSeq;
            }
            else if (request.Since is { } since)
            {
                if (slice.Epoch != since.Epoch || slice.Epoch != topic.Epoch)
                {
                    recovered = false;
                    sub.LastSeq = Math.Max(topic.Seq, slice.Epoch == topic.Epoch ? slice.Head : topic.Seq);
                    sub.ContiguousFrom = sub.Delivered ? sub.ContiguousFrom : sub.LastSeq;
                }
                else
                {
                    // A connection never gets a seq twice, nor one out of order: one that already received messages
                    // on this topic resumes from whichever is later, what it asked for or what it already has, and
                    // what it missed before it joined live cannot be sent any more (recovered: false says so).
                    var missedBeforeJoining = sub.Delivered && since.Seq < sub.ContiguousFrom;
                    recovered = !missedBeforeJoining && slice.FirstAvailable <= Math.Max(since.Seq, sub.Delivered ? sub.LastSeq : 0) + 1 && since.Seq <= slice.Head;
                    var from = Math.Min(since.Seq, slice.Head);
                    sub.LastSeq = sub.Delivered ? Math.Max(sub.LastSeq, from) : from;
                    if (!sub.Delivered)
                    {
                        sub.ContiguousFrom = Math.Max(from, slice.FirstAvailable - 1);
                    }

                    Replay(sub, slice.Messages);
                }
            }
            else
            {
                var fresh = !sub.Delivered;
                sub.LastSeq = fresh ? 0 : sub.LastSeq;
                if (slice.Epoch == topic.Epoch)
                {
                    Replay(sub, slice.Messages);
                }

                sub.LastSeq = Math.Max(sub.LastSeq, slice.Epoch == topic.Epoch ? slice.Head : topic.Seq);
                if (fresh)
                {
                    sub.ContiguousFrom = slice.Epoch == topic.Epoch && slice.Messages.Length > 0 ? slice.Messages[0].Seq - 1 : sub.LastSeq;
                }
            }

            DeliverNewer(sub, held);
            if (recovered is { } outcome)
            {
                Observability.GatewayMetrics.Recovery(outcome);
            }

            request.Completion.TrySetResult(new SubscribeResult(topic.Epoch, sub.LastSeq, recovered));
        }

        private static void Replay(Subscription sub, TopicMessage[] messages)
        {
            foreach (var m in messages)
            {
                if (m.Seq > sub.LastSeq)
                {
                    sub.LastSeq = m.Seq;
                    sub.Delivered = true;
                    sub.Connection.Deliver(new OutboundMessage(m));
                }
            }
        }

        private void OnUnsubscribe(UnsubscribeCommand request)
        {
            if (!_topics.TryGetValue(request.Topic, out var topic))
            {
                return;
            }

            if (topic.Waiting is { } waiting)
            {
                foreach (var w in waiting.Where(w => w.Connection == request.Connection).ToArray())
                {
                    waiting.Remove(w);
                    w.Completion.TrySetCanceled();
                }
            }

            if (topic.Subscribers.Remove(request.Connection))
            {
                topic.Changed();
                CountMember(topic, request.Connection, -1);
            }

            if (topic.Subscribers.Count == 0 && topic.EmptySince == 0)
            {
                topic.EmptySince = router._time.GetTimestamp();
            }
        }

        private void OnSweep()
        {
            var linger = router._options.EmptyTopicLinger;
            foreach (var topic in _topics.Values)
            {
                if (topic.Live && topic.Subscribers.Count == 0 && topic.Waiting is null && topic.EmptySince != 0
                    && router._time.GetElapsedTime(topic.EmptySince) >= linger)
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
                await router.Grain(topic).RemoveInterestAsync(router._identity.Id);
            }
            catch (Exception ex)
            {
                // The lease lapses by itself; this only makes it go sooner.
                GatewayLog.RemoveInterestFailed(router._logger, topic, ex);
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
                    await router.Grain(topic.Name).ReportPresenceAsync(router._identity.Id, member, Math.Max(0, count));
                }
                catch (Exception ex)
                {
                    GatewayLog.PresenceReportFailed(router._logger, topic.Name, ex);
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
                if (s.WantsPresence)
                {
                    s.Connection.DeliverPresence(change);
                }
            }
        }

        private static PushRejectedException Unavailable(string message) => new("unavailable", message);
    }
}

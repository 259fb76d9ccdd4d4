using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using OrleansPush.Grains.Webhooks;
using OrleansPush.Hosting.Webhooks;
using Orleans.Concurrency;
using OrleansPush.Grains.History;

namespace OrleansPush.Grains;

/// <inheritdoc cref="ITopicGrain"/>
/// <remarks>
/// Publishes are group-committed: the grain is reentrant, each publish joins the batch being formed, and one flush
/// loop gives a whole batch its seqs (the next ones after the durable head), appends it to the history store in one
/// round trip, then routes it as one stream event per gateway. A publish is answered after its batch is durable and
/// routed. State changes happen only between awaits, so interleaving is safe. The recent history is also kept in
/// memory for replays.
/// <para>Fencing: every append is a compare-and-set on the durable head (<see cref="IHistoryStore"/>). What an append
/// can come to, and what the publishers of its batch are told:</para>
/// <list type="bullet">
/// <item><b>stored</b>: the store took it (possibly on a retry, or found holding it after an error): routed, answered
/// with the positions.</item>
/// <item><b>conflict</b>: the store's head moved (another writer, or an earlier append of ours that was thought lost).
/// The grain reloads its position from the store; when none of its attempts can land any more (the stored head is no
/// longer the one they expect) the batch is given new seqs and appended again, a few times at most; otherwise, or after
/// that, <b>refused</b>.</item>
/// <item><b>refused</b>: the batch is certainly not in history and never will be: publishers hear "not published".</item>
/// <item><b>unknown</b>: the store kept failing and it cannot be told whether an attempt landed or still will:
/// publishers hear "may have been published". Seqs are never rolled back: the next append expects the same head, so
/// a late landing makes it conflict and the grain reloads, and a late landing after it is refused.</item>
/// </list>
/// </remarks>
[Reentrant]
public sealed class TopicGrain : Grain, ITopicGrain
{
    /// <summary>Most messages one flush takes: bounds a store round trip and a stream event.</summary>
    public const int MaxBatch = 256;

    /// <summary>How often an append that failed without an answer is tried again, identically (the compare-and-set
    /// makes that safe), before the grain gives up on knowing.</summary>
    public const int MaxUncertainRetries = 2;

    /// <summary>How often a batch is given new seqs after a conflict before its publishers are told "not published".</summary>
    public const int MaxConflictRetries = 3;

    /// <summary>How often per lease time the grain checks the leases of gateways it holds presence of: a dead gateway's
    /// members leave at most a lease and a quarter after its last renewal.</summary>
    public const int PresenceChecksPerLease = 4;

    /// <summary>Longest idempotency key accepted (it is stored with the message for the dedupe window).</summary>
    public const int MaxIdempotencyKeyLength = 255;

    private static readonly TimeSpan UncertainRetryDelay = TimeSpan.FromMilliseconds(100);

    private readonly ILogger<TopicGrain> _logger;
    private readonly TimeProvider _time;
    private readonly TopicOptions _topics;
    private readonly RoutingOptions _routing;
    private readonly IHistoryStore _store;
    private readonly WebhookEvents _webhooks;
    private Action<string, Exception>? _onRouteFailure;
    private string _topic = string.Empty;
    private bool _valid;
    private string _epoch = string.Empty;
    private long _durableSeq;
    private HistoryBounds _bounds;
    private RecentHistory _history = null!;

    // The latest value, kept beyond the history's bounds: in a KeepLatest namespace the head's message, in a Retain one
    // the last retained message (null elsewhere, before any, or once cleared).
    private TopicMessage? _latest;
    private bool _keepLatest;
    private bool _retain;

    // Routes, their occupancy events and the route-failure callback are made at the first lease, and the batch list at
    // the first publish: a topic that nobody subscribes to needs none of them (issue 16: memory per live topic).
    private GatewayRoutes? _routes;
    private LeaseOccupancy? _occupancy;
    private IdempotencyWindow _dedupe = null!;
    private Dictionary<string, Dictionary<string, int>>? _presenceByGateway;
    private IGrainTimer? _presenceTimer;
    private TimeSpan _announceEvery;
    private DateTimeOffset _announceAgainAt;
    private List<Pending>? _batch;
    private bool _flushing;

    public TopicGrain(ILogger<TopicGrain> logger, IOptions<TopicOptions> topics, IOptions<RoutingOptions> routing, IHistoryStore store, TimeProvider time,
        WebhookEvents webhooks)
    {
        _webhooks = webhooks;
        _logger = logger;
        _topics = topics.Value;
        _routing = routing.Value;
        _store = store;
        _time = time;
    }

    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        _topic = this.GetPrimaryKeyString();
        _valid = TopicName.IsValid(_topic);
        var ns = _topics.For(_topic);
        _bounds = new HistoryBounds(ns.HistorySize, ns.HistoryTtl, _topics.DedupeWindow, ns.PositionTtl);
        _keepLatest = ns.KeepLatest;
        _retain = ns.Retain;
        _history = new RecentHistory(ns.HistorySize, ns.HistoryTtl);
        _dedupe = new IdempotencyWindow(_topics.DedupeWindow, _time);
        if (!_valid)
        {
            return;
        }

        // An earlier activation (on this silo or one that died) may have taken keys within the window: until it has
        // passed, a key this activation has not seen is looked up in the store.
        _dedupe.MarkIncomplete();

        // The stored epoch and head carry on; with nothing stored (a new topic, or a store that lost it) a new epoch
        // tells clients that older positions cannot be resumed.
        Adopt(await _store.LoadAsync(_topic, _bounds, cancellationToken));

        if (ns.Wildcards && TopicName.PersonalOwner(_topic) is null)
        {
            _announceEvery = NamespaceGrain.LifetimeOf(ns) / 2;
            await AnnounceAsync();
        }
    }

    /// <summary>A topic that is published to stays in its namespace's directory: its entry lasts a position's lifetime
    /// after the last announcement, so the topic announces itself again once half of that has passed.</summary>
    private void AnnounceAgainIfDue()
    {
        if (_announceEvery > TimeSpan.Zero && _time.GetUtcNow() >= _announceAgainAt)
        {
            _ = AnnounceAsync();
        }
    }

    /// <summary>Tells the namespace's directory that this topic is active, before any publish is taken: a wildcard
    /// subscriber that hears of it subscribes from this position, so it misses nothing published from now on.</summary>
    private async Task AnnounceAsync()
    {
        _announceAgainAt = _time.GetUtcNow() + _announceEvery;
        try
        {
            await GrainFactory.GetGrain<INamespaceGrain>(TopicName.DirectoryOf(TopicName.NamespaceOf(_topic))).AnnounceAsync(_topic, _epoch, _durableSeq);
        }
        catch (Exception ex)
        {
            GrainsLog.AnnounceFailed(_logger, _topic, ex);
        }
    }

    public Task<TopicPosition> PublishAsync(byte[] data, string? idempotencyKey) => PublishAsync(data, PayloadFormat.Json, idempotencyKey);

    public Task<TopicPosition> PublishAsync(byte[] data, PayloadFormat format, string? idempotencyKey) => PublishAsync(data, format, null, idempotencyKey);

    public Task<TopicPosition> PublishAsync(byte[] data, PayloadFormat format, byte[]? properties, string? idempotencyKey)
    {
        EnsureValid();
        CheckPayload(data, format);
        var pending = new Pending(data, format, properties, _time.GetUtcNow().ToUnixTimeMilliseconds(), idempotencyKey, retained: false);
        if (idempotencyKey is null)
        {
            Enqueue(pending);
            return pending.Completion.Task;
        }

        if (idempotencyKey.Length is 0 or > MaxIdempotencyKeyLength)
        {
            throw new PushRejectedException(WireCodes.BadRequest, $"An idempotency key is 1-{MaxIdempotencyKeyLength} characters.");
        }

        if (_dedupe.TryGet(idempotencyKey, out var first))
        {
            return first;
        }

        // Remembered before anything runs, so a retry arriving meanwhile joins this publish.
        var complete = _dedupe.IsComplete;
        _dedupe.Remember(idempotencyKey, pending.Completion.Task);
        if (complete)
        {
            Enqueue(pending);
        }
        else
        {
            _ = LookUpThenEnqueueAsync(pending);
        }

        return pending.Completion.Task;
    }

    public Task<TopicPosition> PublishRetainedAsync(byte[] data, PayloadFormat format, byte[]? properties)
    {
        EnsureValid();
        if (!_keepLatest && !_retain)
        {
            throw new PushRejectedException(WireCodes.BadRequest, "Retained messages are kept only in namespaces with Retain or KeepLatest; elsewhere subscribers resume from history instead.");
        }

        if (data is { Length: 0 })
        {
            // Clears the latest value; published to nobody (as MQTT brokers do with an empty retained message).
            var clear = new Pending(data, format, null, 0, null, retained: true);
            Enqueue(clear);
            return clear.Completion.Task;
        }

        CheckPayload(data, format);
        var pending = new Pending(data, format, properties, _time.GetUtcNow().ToUnixTimeMilliseconds(), null, retained: true);
        Enqueue(pending);
        return pending.Completion.Task;
    }

    private static void CheckPayload(byte[] data, PayloadFormat format)
    {
        if (data is null || format is not (PayloadFormat.Json or PayloadFormat.Binary))
        {
            throw new PushRejectedException(WireCodes.BadRequest, "A message is one JSON value or binary bytes.");
        }

        if (format == PayloadFormat.Json && !JsonPayload.IsOneValue(data))
        {
            throw new PushRejectedException(WireCodes.BadRequest, "The message must be one JSON value.");
        }
    }

    /// <summary>A key this activation has not seen, while the store may hold it (see <see cref="IdempotencyWindow.IsComplete"/>):
    /// the publisher gets the first publish's position when the store has it, else the publish goes ahead.</summary>
    private async Task LookUpThenEnqueueAsync(Pending pending)
    {
        TopicPosition? stored;
        try
        {
            stored = await _store.FindKeyAsync(_topic, pending.Key!);
        }
        catch (Exception ex)
        {
            GrainsLog.KeyLookupFailed(_logger, _topic, ex);
            _dedupe.Forget(pending.Key!);
            pending.Completion.TrySetException(new PushRejectedException(WireCodes.Unavailable, NotPublished));
            return;
        }

        if (stored is not null)
        {
            pending.Completion.TrySetResult(stored);
        }
        else
        {
            Enqueue(pending);
        }
    }

    private void Enqueue(Pending pending)
    {
        (_batch ??= []).Add(pending);
        if (!_flushing)
        {
            _flushing = true;
            _ = FlushAsync();
        }
    }

    public async Task<TopicPosition> AddInterestAsync(string gatewayId)
    {
        EnsureValid();
        if (_routes is null)
        {
            _routes = new GatewayRoutes(this.GetStreamProvider(PushNames.StreamProvider), _time, _routing.Lease);
            _occupancy = new LeaseOccupancy(_routes, _webhooks, WebhookEventTypes.TopicOccupied, WebhookEventTypes.TopicVacated, _topic, null, _routing.Lease);
        }

        _routes.Renew(gatewayId);
        await _occupancy!.ChangedAsync(this);
        return new TopicPosition(_epoch, _durableSeq);
    }

    public Task RemoveInterestAsync(string gatewayId)
    {
        if (_routes is null)
        {
            return Task.CompletedTask; // never leased: nothing to remove, never occupied
        }

        _routes.Remove(gatewayId);
        return _occupancy!.ChangedAsync(this);
    }

    public Task<HistorySlice> ReadAsync(long afterSeq, int max)
    {
        EnsureValid();
        _history.Trim(_time.GetUtcNow().ToUnixTimeMilliseconds());
        return Task.FromResult(Slice(WithLatest(_history.After(afterSeq, max), afterSeq, max)));
    }

    public Task<HistorySlice> ReadLastAsync(int count)
    {
        EnsureValid();
        _history.Trim(_time.GetUtcNow().ToUnixTimeMilliseconds());
        return Task.FromResult(Slice(WithLatest(_history.Last(count), _durableSeq - count, count)));
    }

    public Task<HistorySlice> ReadLatestAsync()
    {
        EnsureValid();
        return Task.FromResult(Slice(_latest is { } latest ? [latest] : []));
    }

    public Task<TopicPosition> GetPositionAsync()
    {
        EnsureValid();
        return Task.FromResult(new TopicPosition(_epoch, _durableSeq));
    }

    public Task<string[]> GetGatewaysAsync() => Task.FromResult(_routes?.LiveGateways() ?? []);

    public async Task ReportPresenceAsync(string gatewayId, string member, int connections)
    {
        EnsureValid();
        var before = MemberConnections(member);
        if (!Presence.TryGetValue(gatewayId, out var members))
        {
            if (connections <= 0)
            {
                return;
            }

            Presence[gatewayId] = members = new Dictionary<string, int>(StringComparer.Ordinal);
        }

        if (connections > 0)
        {
            members[member] = connections;
        }
        else if (members.Remove(member) && members.Count == 0)
        {
            Presence.Remove(gatewayId);
        }

        WatchPresenceLeases();
        var after = MemberConnections(member);
        if (member.Length > 0 && (before == 0) != (after == 0))
        {
            await SendToGatewaysAsync(new PresenceChanged(_topic, member, Joined: after > 0));
            await _webhooks.EmitAsync(after > 0 ? WebhookEventTypes.PresenceJoin : WebhookEventTypes.PresenceLeave, _topic, _topic, member);
        }
    }

    /// <summary>
    /// Presence of a gateway lives as long as its lease. A gateway that dies does not report its members leaving, so
    /// the grain watches the leases of the gateways it holds presence of, with a timer that exists only while it holds
    /// some (a topic without presence state does nothing), and announces the leaves of a gateway whose lease lapsed.
    /// </summary>
    private void WatchPresenceLeases()
    {
        if (Presence.Count == 0)
        {
            _presenceTimer?.Dispose();
            _presenceTimer = null;
        }
        else
        {
            var period = _routing.Lease / PresenceChecksPerLease;
            _presenceTimer ??= this.RegisterGrainTimer(static (grain, _) => grain.LeavePresenceOfLapsedGatewaysAsync(), this, new GrainTimerCreationOptions(period, period) { Interleave = true });
        }
    }

    /// <summary>Drops the presence of every gateway whose lease lapsed and announces who left with it.</summary>
    private async Task LeavePresenceOfLapsedGatewaysAsync()
    {
        List<string>? left = null;
        foreach (var gone in Presence.Keys.Where(g => _routes?.IsLive(g) != true).ToArray())
        {
            var members = Presence[gone];
            Presence.Remove(gone);
            foreach (var member in members.Keys)
            {
                if (member.Length > 0 && MemberConnections(member) == 0)
                {
                    (left ??= []).Add(member);
                }
            }
        }

        WatchPresenceLeases();
        foreach (var member in left ?? [])
        {
            await SendToGatewaysAsync(new PresenceChanged(_topic, member, Joined: false));
            await _webhooks.EmitAsync(WebhookEventTypes.PresenceLeave, _topic, _topic, member);
        }
    }

    public async Task<TopicPresence> GetPresenceAsync()
    {
        EnsureValid();
        await LeavePresenceOfLapsedGatewaysAsync();
        var totals = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (member, count) in Presence.Values.SelectMany(m => m))
        {
            totals[member] = totals.GetValueOrDefault(member) + count;
        }

        var users = totals.Where(t => t.Key.Length > 0).OrderBy(t => t.Key, StringComparer.Ordinal)
            .Select(t => new PresenceEntry(t.Key, t.Value)).ToArray();
        return new TopicPresence(users, totals.GetValueOrDefault(string.Empty));
    }

    /// <summary>Members per gateway; made at the first report (only topics with presence get any).</summary>
    private Dictionary<string, Dictionary<string, int>> Presence => _presenceByGateway ??= new(StringComparer.Ordinal);

    private int MemberConnections(string member) => Presence.Values.Sum(m => m.GetValueOrDefault(member));

    /// <summary>The one flush loop: sequence a batch, store it, route it, answer its publishers; repeat while more
    /// publishes arrived meanwhile.</summary>
    private async Task FlushAsync()
    {
        try
        {
            while (_batch is { Count: > 0 })
            {
                if (_batch[0].Clears)
                {
                    var clear = _batch[0];
                    _batch.RemoveAt(0);
                    await ClearLatestAsync(clear);
                    continue;
                }

                // A batch ends before the next clear: the clear applies after the messages before it, before those after.
                var next = _batch.FindIndex(p => p.Clears);
                var take = Math.Min(MaxBatch, next < 0 ? _batch.Count : next);
                var batch = _batch.Count == take ? _batch : _batch[..take];
                _batch = _batch.Count == take ? null : _batch[take..];
                var (outcome, messages) = await StoreAsync(batch);
                switch (outcome)
                {
                    case AppendOutcome.Stored:
                        await RouteAsync(batch, messages);
                        break;
                    case AppendOutcome.Refused:
                        Fail(batch, NotPublished);
                        break;
                    default:
                        Fail(batch, MayHaveBeenPublished);
                        break;
                }
            }
        }
        finally
        {
            _flushing = false;
        }
    }

    /// <summary>Appends <paramref name="batch"/> after the durable head, through conflicts and failures without an
    /// answer (see the class remarks), and returns what became of it with the messages as sequenced.</summary>
    private async Task<(AppendOutcome Outcome, TopicMessage[] Messages)> StoreAsync(List<Pending> batch)
    {
        var messages = Sequence(batch);
        var uncertain = false;
        var failures = 0;
        var reloads = 0;
        while (true)
        {
            var expectedEpoch = _epoch;
            var expectedHead = _durableSeq;
            try
            {
                var latest = LatestChangeOf(batch);
                await _store.AppendAsync(_topic, expectedEpoch, messages, KeysOf(batch, messages), _bounds, latest);
                _durableSeq = messages[^1].Seq;
                _latest = latest.Apply(_latest, messages);
                foreach (var m in messages)
                {
                    _history.Append(m);
                }

                _history.Trim(_time.GetUtcNow().ToUnixTimeMilliseconds());
                AnnounceAgainIfDue();
                return (AppendOutcome.Stored, messages);
            }
            catch (HistoryConflictException ex)
            {
                GrainsLog.AppendConflict(_logger, _topic, ex.Message);
            }
            catch (Exception ex)
            {
                uncertain = true;
                if (++failures <= MaxUncertainRetries)
                {
                    GrainsLog.AppendUncertain(_logger, _topic, batch.Count, ex);
                    await Task.Delay(UncertainRetryDelay * failures);
                    continue;
                }

                GrainsLog.AppendFailed(_logger, _topic, batch.Count, ex);
            }

            // The store's head is not what this grain thought, or nobody can say whether the append landed: read the
            // position back rather than guess.
            StoredHistory? stored;
            try
            {
                stored = await _store.LoadAsync(_topic, _bounds);
            }
            catch (Exception ex)
            {
                GrainsLog.ReloadFailed(_logger, _topic, ex);
                _dedupe.MarkIncomplete();
                return (uncertain ? AppendOutcome.Unknown : AppendOutcome.Refused, messages);
            }

            // Whoever moved the head (or an append of ours that was thought lost) may have stored keys unseen here.
            _dedupe.MarkIncomplete();
            if (Holds(stored, expectedEpoch, messages))
            {
                Adopt(stored);
                return (AppendOutcome.Stored, messages);
            }

            // An attempt can land only while the stored head is the one it expects; once the head moved on, none of
            // ours ever will, and the batch may take the next seqs.
            var attemptsDead = stored is null ? expectedHead > 0 : stored.Epoch != expectedEpoch || stored.Head != expectedHead;
            Adopt(stored);
            if (uncertain && !attemptsDead)
            {
                return (AppendOutcome.Unknown, messages);
            }

            if (++reloads > MaxConflictRetries)
            {
                return (AppendOutcome.Refused, messages);
            }

            uncertain = false;
            failures = 0;
            await SettleStoredKeysAsync(batch);
            if (batch.Count == 0)
            {
                return (AppendOutcome.Stored, []);
            }

            messages = Sequence(batch);
        }
    }

    /// <summary>Before a batch takes new seqs: a keyed publish whose key the store now holds was published by an
    /// append of ours that landed after all (or by another writer); its publisher gets that position and it leaves the
    /// batch. One whose key cannot be looked up leaves it too, answered "may have been published".</summary>
    private async Task SettleStoredKeysAsync(List<Pending> batch)
    {
        for (var i = batch.Count - 1; i >= 0; i--)
        {
            if (batch[i].Key is not { } key)
            {
                continue;
            }

            try
            {
                if (await _store.FindKeyAsync(_topic, key) is { } stored)
                {
                    batch[i].Completion.TrySetResult(stored);
                    batch.RemoveAt(i);
                }
            }
            catch (Exception ex)
            {
                GrainsLog.KeyLookupFailed(_logger, _topic, ex);
                Fail([batch[i]], MayHaveBeenPublished);
                batch.RemoveAt(i);
            }
        }
    }

    /// <summary>What a batch does to the latest value: in a KeepLatest namespace its last message becomes it; in a Retain
    /// namespace its last retained message does (none: it stays); elsewhere there is none.</summary>
    private LatestChange LatestChangeOf(List<Pending> batch)
    {
        if (_keepLatest)
        {
            return LatestChange.To(batch.Count - 1);
        }

        if (_retain)
        {
            var last = batch.FindLastIndex(p => p.Retained);
            return last < 0 ? LatestChange.Keep : LatestChange.To(last);
        }

        return LatestChange.Clear;
    }

    /// <summary>An empty retained publish: the latest value goes, with a compare-and-set on the durable head like an
    /// append's (on a conflict the grain reloads and tries again, a few times). Its publisher gets the topic's position,
    /// or <c>unavailable</c> when the store did not take it (a clear is safe to retry).</summary>
    private async Task ClearLatestAsync(Pending clear)
    {
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                await _store.ClearLatestAsync(_topic, _epoch, _durableSeq);
                _latest = null;
                clear.Completion.TrySetResult(new TopicPosition(_epoch, _durableSeq));
                return;
            }
            catch (HistoryConflictException ex) when (attempt < MaxConflictRetries)
            {
                GrainsLog.AppendConflict(_logger, _topic, ex.Message);
                try
                {
                    Adopt(await _store.LoadAsync(_topic, _bounds));
                    _dedupe.MarkIncomplete();
                }
                catch (Exception reload)
                {
                    GrainsLog.ReloadFailed(_logger, _topic, reload);
                    Fail([clear], NotCleared);
                    return;
                }
            }
            catch (Exception ex)
            {
                GrainsLog.AppendFailed(_logger, _topic, 0, ex);
                Fail([clear], NotCleared);
                return;
            }
        }
    }

    private static IReadOnlyList<IdempotencyKey> KeysOf(List<Pending> batch, TopicMessage[] messages)
    {
        List<IdempotencyKey>? keys = null;
        for (var i = 0; i < batch.Count; i++)
        {
            if (batch[i].Key is { } key)
            {
                (keys ??= []).Add(new IdempotencyKey(key, messages[i].Seq));
            }
        }

        return keys is null ? [] : keys;
    }

    /// <summary>Gives the batch the seqs after the durable head, in the current epoch.</summary>
    private TopicMessage[] Sequence(List<Pending> batch)
    {
        var messages = new TopicMessage[batch.Count];
        for (var i = 0; i < messages.Length; i++)
        {
            var p = batch[i];
            messages[i] = new TopicMessage(_topic, _epoch, _durableSeq + 1 + i, p.Data, p.PublishedAtUnixMs, p.Format, p.Properties);
        }

        return messages;
    }

    /// <summary>Whether the store holds exactly these messages (it took an append whose answer was lost).</summary>
    private static bool Holds(StoredHistory? stored, string epoch, TopicMessage[] messages)
    {
        if (stored is null || stored.Epoch != epoch || stored.Head < messages[^1].Seq)
        {
            return false;
        }

        var bySeq = stored.Messages.ToDictionary(m => m.Seq);
        foreach (var m in messages)
        {
            if (bySeq.TryGetValue(m.Seq, out var kept) && (kept.PublishedAtUnixMs != m.PublishedAtUnixMs || !kept.Data.AsSpan().SequenceEqual(m.Data)))
            {
                return false;
            }
        }

        // Messages beyond the history's bounds cannot be compared; the head covering them is what is left to go by.
        return true;
    }

    /// <summary>Takes the store's position and recent messages as this grain's own. With nothing stored, a new epoch,
    /// unless this grain's epoch never got a message stored (then it carries on: nothing of it was ever seen).</summary>
    private void Adopt(StoredHistory? stored)
    {
        _history = new RecentHistory(_bounds.MaxCount, _bounds.Ttl);
        _latest = null;
        if (stored is null)
        {
            if (_durableSeq > 0 || _epoch.Length == 0)
            {
                _epoch = Epochs.New();
            }

            _durableSeq = 0;
            return;
        }

        _epoch = stored.Epoch;
        _durableSeq = stored.Head;
        foreach (var m in stored.Messages)
        {
            _history.Append(m);
        }

        if (_keepLatest || _retain)
        {
            _latest = stored.Latest;
        }
    }

    private async Task RouteAsync(List<Pending> batch, TopicMessage[] messages)
    {
        if (messages.Length == 0)
        {
            return;
        }

        GatewayEvent routed = messages.Length == 1 ? messages[0] : new TopicMessageBatch(messages);
        await SendToGatewaysAsync(routed);
        for (var i = 0; i < batch.Count; i++)
        {
            batch[i].Completion.TrySetResult(new TopicPosition(messages[i].Epoch, messages[i].Seq));
        }
    }

    /// <summary>One event to every gateway that holds a lease (none before the first lease).</summary>
    private Task SendToGatewaysAsync(GatewayEvent e) =>
        _routes is null ? Task.CompletedTask : _routes.SendAsync(e, _onRouteFailure ??= (gateway, ex) => GrainsLog.RouteFailed(_logger, _topic, gateway, ex));

    private const string NotPublished = "The message could not be stored; it was not published. Retry it.";
    private const string NotCleared = "The retained value could not be cleared; retry.";
    private const string MayHaveBeenPublished =
        "The message may have been published: the store did not confirm it. Retry with the same idempotency key to publish it at most once.";

    /// <summary>Publishers of a batch that is not (or not known to be) in history hear <c>unavailable</c>; their keys
    /// are forgotten so that a retry is not answered with this failure. After "may have been published" the window is
    /// incomplete (the grain read its position back), so a retry asks the store, which holds the key if the write
    /// landed.</summary>
    private void Fail(List<Pending> batch, string message)
    {
        var error = new PushRejectedException(WireCodes.Unavailable, message);

        foreach (var p in batch)
        {
            if (p.Key is not null)
            {
                _dedupe.Forget(p.Key);
            }

            p.Completion.TrySetException(error);
        }
    }

    /// <summary>History has nothing left (its size or TTL let the messages go): the latest value, kept beyond them, is
    /// what a read after <paramref name="afterSeq"/> gets.</summary>
    private TopicMessage[] WithLatest(TopicMessage[] fromHistory, long afterSeq, int max) =>
        _history.Count == 0 && _latest is { } latest && latest.Seq == _durableSeq && latest.Seq > afterSeq && max > 0 ? [latest] : fromHistory;

    private HistorySlice Slice(TopicMessage[] messages) =>
        new(_epoch, _durableSeq, _history.Count > 0 ? _history.FirstSeq : messages.Length > 0 ? messages[0].Seq : _durableSeq + 1, messages);

    private void EnsureValid()
    {
        if (!_valid)
        {
            throw new PushRejectedException(WireCodes.BadTopic, "A topic is 1-200 characters of A-Z a-z 0-9 _ - . : / @.");
        }
    }

    private enum AppendOutcome
    {
        Stored,
        Refused,
        Unknown,
    }

    private sealed class Pending(byte[] data, PayloadFormat format, byte[]? properties, long publishedAtUnixMs, string? key, bool retained)
    {
        /// <summary>A retained publish: in a Retain namespace it becomes the latest value.</summary>
        public bool Retained { get; } = retained;

        /// <summary>An empty retained publish: not a message, it clears the latest value.</summary>
        public bool Clears => Retained && Data.Length == 0;

        public byte[] Data { get; } = data;

        public PayloadFormat Format { get; } = format;

        /// <summary>The message's transport properties; none (null) when it came with an empty set.</summary>
        public byte[]? Properties { get; } = properties is { Length: > 0 } ? properties : null;

        public long PublishedAtUnixMs { get; } = publishedAtUnixMs;

        public string? Key { get; } = key;

        public TaskCompletionSource<TopicPosition> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}

internal static class Epochs
{
    /// <summary>A short random epoch: 8 characters of base-32, about 40 bits.</summary>
    public static string New()
    {
        const string alphabet = "abcdefghijklmnopqrstuvwxyz234567";
        Span<byte> bytes = stackalloc byte[8];
        System.Security.Cryptography.RandomNumberGenerator.Fill(bytes);
        Span<char> chars = stackalloc char[8];
        for (var i = 0; i < chars.Length; i++)
        {
            chars[i] = alphabet[bytes[i] & 31];
        }

        return new string(chars);
    }
}

/// <summary>Remembers the position of each idempotency key for a window; bounded so a key flood cannot grow it
/// without limit (the oldest keys go first). It knows whether it is complete: whether every key taken within the
/// window is still here. It is not after a key was dropped early, nor for a window after <see cref="MarkIncomplete"/>
/// (a new activation, or an append whose outcome the grain had to read back); meanwhile the grain asks the store about
/// keys it does not find here.</summary>
internal sealed class IdempotencyWindow(TimeSpan window, TimeProvider time)
{
    public const int MaxKeys = 100_000;

    // Both made at the first key: most topics never see one.
    private Dictionary<string, (Task<TopicPosition> Position, DateTimeOffset Expires)>? _positions;

    // Each Remember adds an entry; an entry whose key was forgotten or remembered again since no longer matches its
    // key's expiry and is skipped when it comes up.
    private Queue<(string Key, DateTimeOffset Expires)>? _order;
    private DateTimeOffset _incompleteUntil;

    public bool IsComplete => time.GetUtcNow() >= _incompleteUntil;

    public void MarkIncomplete() => Incomplete(time.GetUtcNow() + window);

    /// <summary>The first publish's answer (still pending while its batch is being stored).</summary>
    public bool TryGet(string key, out Task<TopicPosition> position)
    {
        Expire();
        if (_positions is not null && _positions.TryGetValue(key, out var entry))
        {
            position = entry.Position;
            return true;
        }

        position = null!;
        return false;
    }

    public void Forget(string key) => _positions?.Remove(key);

    public void Remember(string key, Task<TopicPosition> position)
    {
        var expires = time.GetUtcNow() + window;
        _positions ??= new(StringComparer.Ordinal);
        _order ??= new();
        _positions[key] = (position, expires);
        _order.Enqueue((key, expires));
        while ((_positions.Count > MaxKeys || _order.Count > 2 * MaxKeys) && _order.TryDequeue(out var oldest))
        {
            if (Matches(oldest))
            {
                _positions.Remove(oldest.Key);
                Incomplete(oldest.Expires);
            }
        }
    }

    private void Expire()
    {
        if (_order is null)
        {
            return;
        }

        var now = time.GetUtcNow();
        while (_order.TryPeek(out var head) && head.Expires <= now)
        {
            _order.Dequeue();
            if (Matches(head))
            {
                _positions?.Remove(head.Key);
            }
        }
    }

    private bool Matches((string Key, DateTimeOffset Expires) entry) =>
        _positions is not null && _positions.TryGetValue(entry.Key, out var current) && current.Expires == entry.Expires;

    private void Incomplete(DateTimeOffset until)
    {
        if (until > _incompleteUntil)
        {
            _incompleteUntil = until;
        }
    }
}

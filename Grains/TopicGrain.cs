using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Concurrency;
using OrleansPush.Grains.History;

namespace OrleansPush.Grains;

/// <inheritdoc cref="ITopicGrain"/>
/// <remarks>
/// Publishes are group-committed: the grain is reentrant, each publish takes the next seq at once and joins the
/// batch being formed, and one flush loop appends a whole batch to the history store in one round trip, then routes
/// it as one stream event per gateway. A publish is answered after its batch is durable and routed. State changes
/// happen only between awaits, so interleaving is safe. The recent history is also kept in memory for replays.
/// </remarks>
[Reentrant]
public sealed class TopicGrain : Grain, ITopicGrain
{
    /// <summary>Most messages one flush takes: bounds a store round trip and a stream event.</summary>
    public const int MaxBatch = 256;

    private readonly ILogger<TopicGrain> _logger;
    private readonly TimeProvider _time;
    private readonly TopicOptions _topics;
    private readonly RoutingOptions _routing;
    private readonly IHistoryStore _store;
    private readonly Action<string, Exception> _onRouteFailure;
    private string _topic = string.Empty;
    private bool _valid;
    private string _epoch = string.Empty;
    private long _seq;
    private long _durableSeq;
    private HistoryBounds _bounds;
    private RecentHistory _history = null!;
    private GatewayRoutes _routes = null!;
    private IdempotencyWindow _dedupe = null!;
    private readonly Dictionary<string, Dictionary<string, int>> _presence = new(StringComparer.Ordinal);
    private List<Pending> _batch = [];
    private bool _flushing;

    public TopicGrain(ILogger<TopicGrain> logger, IOptions<TopicOptions> topics, IOptions<RoutingOptions> routing, IHistoryStore store, TimeProvider time)
    {
        _logger = logger;
        _topics = topics.Value;
        _routing = routing.Value;
        _store = store;
        _time = time;
        _onRouteFailure = (gateway, ex) => GrainsLog.RouteFailed(_logger, _topic, gateway, ex);
    }

    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        _topic = this.GetPrimaryKeyString();
        _valid = TopicName.IsValid(_topic);
        var ns = _topics.For(_topic);
        _bounds = new HistoryBounds(ns.HistorySize, ns.HistoryTtl);
        _history = new RecentHistory(ns.HistorySize, ns.HistoryTtl);
        _routes = new GatewayRoutes(this.GetStreamProvider(PushNames.StreamProvider), _time, _routing.Lease);
        _dedupe = new IdempotencyWindow(_topics.DedupeWindow, _time);
        if (!_valid)
        {
            return;
        }

        // The stored epoch and head carry on; with nothing stored (a new topic, or a store that lost it) a new epoch
        // tells clients that older positions cannot be resumed.
        var stored = await _store.LoadAsync(_topic, _bounds, cancellationToken);
        if (stored is null)
        {
            _epoch = Epochs.New();
        }
        else
        {
            _epoch = stored.Epoch;
            _seq = _durableSeq = stored.Head;
            foreach (var m in stored.Messages)
            {
                _history.Append(m);
            }
        }

        if (ns.Wildcards && TopicName.NamespaceOf(_topic).Length > 0 && TopicName.PersonalOwner(_topic) is null)
        {
            await AnnounceAsync();
        }
    }

    /// <summary>Tells the namespace's directory that this topic is active, before any publish is taken: a wildcard
    /// subscriber that hears of it subscribes from this position, so it misses nothing published from now on.</summary>
    private async Task AnnounceAsync()
    {
        try
        {
            await GrainFactory.GetGrain<INamespaceGrain>(TopicName.NamespaceOf(_topic)).AnnounceAsync(_topic, _epoch, _durableSeq);
        }
        catch (Exception ex)
        {
            GrainsLog.AnnounceFailed(_logger, _topic, ex);
        }
    }

    public Task<TopicPosition> PublishAsync(byte[] data, string? idempotencyKey)
    {
        EnsureValid();
        if (idempotencyKey is not null && _dedupe.TryGet(idempotencyKey, out var first))
        {
            return first;
        }

        var message = new TopicMessage(_topic, _epoch, ++_seq, data, _time.GetUtcNow().ToUnixTimeMilliseconds());
        var pending = new Pending(message, idempotencyKey);
        _batch.Add(pending);
        if (idempotencyKey is not null)
        {
            _dedupe.Remember(idempotencyKey, pending.Completion.Task);
        }

        if (!_flushing)
        {
            _flushing = true;
            _ = FlushAsync();
        }

        return pending.Completion.Task;
    }

    public Task<TopicPosition> AddInterestAsync(string gatewayId)
    {
        EnsureValid();
        _routes.Renew(gatewayId);
        return Task.FromResult(new TopicPosition(_epoch, _durableSeq));
    }

    public Task RemoveInterestAsync(string gatewayId)
    {
        _routes.Remove(gatewayId);
        return Task.CompletedTask;
    }

    public Task<HistorySlice> ReadAsync(long afterSeq, int max)
    {
        EnsureValid();
        _history.Trim(_time.GetUtcNow().ToUnixTimeMilliseconds());
        return Task.FromResult(Slice(_history.After(afterSeq, max)));
    }

    public Task<HistorySlice> ReadLastAsync(int count)
    {
        EnsureValid();
        _history.Trim(_time.GetUtcNow().ToUnixTimeMilliseconds());
        return Task.FromResult(Slice(_history.Last(count)));
    }

    public Task<TopicPosition> GetPositionAsync()
    {
        EnsureValid();
        return Task.FromResult(new TopicPosition(_epoch, _durableSeq));
    }

    public Task<string[]> GetGatewaysAsync() => Task.FromResult(_routes.LiveGateways());

    public async Task ReportPresenceAsync(string gatewayId, string member, int connections)
    {
        EnsureValid();
        var before = MemberConnections(member);
        if (!_presence.TryGetValue(gatewayId, out var members))
        {
            _presence[gatewayId] = members = new Dictionary<string, int>(StringComparer.Ordinal);
        }

        if (connections > 0)
        {
            members[member] = connections;
        }
        else
        {
            members.Remove(member);
        }

        var after = MemberConnections(member);
        if (member.Length > 0 && (before == 0) != (after == 0))
        {
            await _routes.SendAsync(new PresenceChanged(_topic, member, Joined: after > 0), _onRouteFailure);
        }
    }

    public Task<TopicPresence> GetPresenceAsync()
    {
        EnsureValid();
        var live = _routes.LiveGateways().ToHashSet(StringComparer.Ordinal);
        foreach (var gone in _presence.Keys.Where(g => !live.Contains(g)).ToArray())
        {
            _presence.Remove(gone);
        }

        var totals = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (member, count) in _presence.Values.SelectMany(m => m))
        {
            totals[member] = totals.GetValueOrDefault(member) + count;
        }

        var users = totals.Where(t => t.Key.Length > 0).OrderBy(t => t.Key, StringComparer.Ordinal)
            .Select(t => new PresenceEntry(t.Key, t.Value)).ToArray();
        return Task.FromResult(new TopicPresence(users, totals.GetValueOrDefault(string.Empty)));
    }

    private int MemberConnections(string member) => _presence.Values.Sum(m => m.GetValueOrDefault(member));

    /// <summary>The one flush loop: store a batch, remember it, route it, answer its publishers; repeat while more
    /// publishes arrived meanwhile.</summary>
    private async Task FlushAsync()
    {
        try
        {
            while (_batch.Count > 0)
            {
                var batch = _batch.Count <= MaxBatch ? _batch : _batch[..MaxBatch];
                _batch = _batch.Count <= MaxBatch ? [] : _batch[MaxBatch..];
                var messages = batch.ConvertAll(p => p.Message);
                try
                {
                    await _store.AppendAsync(_topic, _epoch, messages, _bounds);
                }
                catch (Exception ex)
                {
                    FailUndurable(batch, ex);
                    continue;
                }

                _durableSeq = messages[^1].Seq;
                foreach (var m in messages)
                {
                    _history.Append(m);
                }

                _history.Trim(_time.GetUtcNow().ToUnixTimeMilliseconds());
                GatewayEvent routed = messages.Count == 1 ? messages[0] : new TopicMessageBatch([.. messages]);
                await _routes.SendAsync(routed, _onRouteFailure);
                foreach (var p in batch)
                {
                    p.Completion.TrySetResult(new TopicPosition(_epoch, p.Message.Seq));
                }
            }
        }
        finally
        {
            _flushing = false;
        }
    }

    /// <summary>The store refused a batch: neither it nor anything sequenced after it is published. Seq goes back to
    /// the last durable message so no gap is left; publishers get <c>unavailable</c> and may retry.</summary>
    private void FailUndurable(List<Pending> batch, Exception ex)
    {
        GrainsLog.AppendFailed(_logger, _topic, batch.Count + _batch.Count, ex);
        var error = new PushRejectedException("unavailable", "The message could not be stored; it was not published. Retry it.");
        foreach (var p in batch.Concat(_batch))
        {
            if (p.Key is not null)
            {
                _dedupe.Forget(p.Key);
            }

            p.Completion.TrySetException(error);
        }

        _batch = [];
        _seq = _durableSeq;
    }

    private HistorySlice Slice(TopicMessage[] messages) =>
        new(_epoch, _durableSeq, _history.Count == 0 ? _durableSeq + 1 : _history.FirstSeq, messages);

    private void EnsureValid()
    {
        if (!_valid)
        {
            throw new PushRejectedException("bad_topic", "A topic is 1-200 characters of A-Z a-z 0-9 _ - . : / @.");
        }
    }

    private sealed class Pending(TopicMessage message, string? key)
    {
        public TopicMessage Message { get; } = message;

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
/// without limit (the oldest keys go first).</summary>
internal sealed class IdempotencyWindow(TimeSpan window, TimeProvider time)
{
    public const int MaxKeys = 100_000;
    private readonly Dictionary<string, Task<TopicPosition>> _positions = new(StringComparer.Ordinal);
    private readonly Queue<(string Key, DateTimeOffset Expires)> _order = new();

    /// <summary>The first publish's answer (still pending while its batch is being stored).</summary>
    public bool TryGet(string key, out Task<TopicPosition> position)
    {
        Expire();
        return _positions.TryGetValue(key, out position!);
    }

    public void Forget(string key) => _positions.Remove(key);

    public void Remember(string key, Task<TopicPosition> position)
    {
        if (_positions.Count >= MaxKeys && _order.TryDequeue(out var oldest))
        {
            _positions.Remove(oldest.Key);
        }

        _positions[key] = position;
        _order.Enqueue((key, time.GetUtcNow() + window));
    }

    private void Expire()
    {
        var now = time.GetUtcNow();
        while (_order.TryPeek(out var head) && head.Expires <= now)
        {
            _order.Dequeue();
            _positions.Remove(head.Key);
        }
    }
}

using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace OrleansPush.Grains;

/// <inheritdoc cref="ITopicGrain"/>
/// <remarks>History lives in memory here: a deactivated or lost activation comes back with a new epoch, which is how
/// clients learn that older positions cannot be resumed.</remarks>
public sealed class TopicGrain : Grain, ITopicGrain
{
    private readonly ILogger<TopicGrain> _logger;
    private readonly TimeProvider _time;
    private readonly TopicOptions _topics;
    private readonly RoutingOptions _routing;
    private readonly Action<string, Exception> _onRouteFailure;
    private string _topic = string.Empty;
    private bool _valid;
    private string _epoch = string.Empty;
    private long _seq;
    private History _history = null!;
    private GatewayRoutes _routes = null!;
    private IdempotencyWindow _dedupe = null!;

    public TopicGrain(ILogger<TopicGrain> logger, IOptions<TopicOptions> topics, IOptions<RoutingOptions> routing, TimeProvider time)
    {
        _logger = logger;
        _topics = topics.Value;
        _routing = routing.Value;
        _time = time;
        _onRouteFailure = (gateway, ex) => GrainsLog.RouteFailed(_logger, _topic, gateway, ex);
    }

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        _topic = this.GetPrimaryKeyString();
        _valid = TopicName.IsValid(_topic);
        var ns = _topics.For(_topic);
        _epoch = Epochs.New();
        _history = new History(ns.HistorySize, ns.HistoryTtl);
        _routes = new GatewayRoutes(this.GetStreamProvider(PushNames.StreamProvider), _time, _routing.Lease);
        _dedupe = new IdempotencyWindow(_topics.DedupeWindow, _time);
        return Task.CompletedTask;
    }

    public async Task<TopicPosition> PublishAsync(byte[] data, string? idempotencyKey)
    {
        EnsureValid();
        if (idempotencyKey is not null && _dedupe.TryGet(idempotencyKey, out var first))
        {
            return first;
        }

        var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        var message = new TopicMessage(_topic, _epoch, ++_seq, data, now);
        _history.Append(message);
        _history.Trim(now);
        var position = new TopicPosition(_epoch, _seq);
        if (idempotencyKey is not null)
        {
            _dedupe.Remember(idempotencyKey, position);
        }

        await _routes.SendAsync(message, _onRouteFailure);
        return position;
    }

    public Task<TopicPosition> AddInterestAsync(string gatewayId)
    {
        EnsureValid();
        _routes.Renew(gatewayId);
        return Task.FromResult(new TopicPosition(_epoch, _seq));
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
        return Task.FromResult(new TopicPosition(_epoch, _seq));
    }

    public Task<string[]> GetGatewaysAsync() => Task.FromResult(_routes.LiveGateways());

    private HistorySlice Slice(TopicMessage[] messages) =>
        new(_epoch, _seq, _history.Count == 0 ? _seq + 1 : _history.FirstSeq, messages);

    private void EnsureValid()
    {
        if (!_valid)
        {
            throw new PushRejectedException("bad_topic", "A topic is 1-200 characters of A-Z a-z 0-9 _ - . : / @.");
        }
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
    private readonly Dictionary<string, TopicPosition> _positions = new(StringComparer.Ordinal);
    private readonly Queue<(string Key, DateTimeOffset Expires)> _order = new();

    public bool TryGet(string key, out TopicPosition position)
    {
        Expire();
        return _positions.TryGetValue(key, out position!);
    }

    public void Remember(string key, TopicPosition position)
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

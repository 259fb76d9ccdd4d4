using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace OrleansPush.Grains;

/// <inheritdoc cref="INamespaceGrain"/>
public sealed class NamespaceGrain(ILogger<NamespaceGrain> logger, IOptions<RoutingOptions> routing, IOptions<TopicOptions> topics, TimeProvider time)
    : Grain, INamespaceGrain
{
    /// <summary>Most topics one directory remembers; past it new topics are not announced (and a warning says so).</summary>
    public const int MaxTopics = 100_000;

    /// <summary>Each known topic with the position it announced and when the entry lapses.</summary>
    private readonly Dictionary<string, Entry> _topics = new(StringComparer.Ordinal);
    private GatewayRoutes _routes = null!;
    private Action<string, Exception> _onRouteFailure = null!;
    private TimeSpan _lifetime;
    private DateTimeOffset _nextSweep;
    private bool _full;

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        var ns = this.GetPrimaryKeyString();
        _routes = new GatewayRoutes(this.GetStreamProvider(PushNames.StreamProvider), time, routing.Value.Lease);
        _onRouteFailure = (gateway, ex) => GrainsLog.RouteFailed(logger, ns + ":*", gateway, ex);
        _lifetime = LifetimeOf(topics.Value.For(ns + ":"));

        // Lapsed entries go on a timer too: a directory nobody calls stays active until Orleans collects it, and its
        // entries must not outlive their topics meanwhile (a timer tick does not keep the grain active).
        var period = SweepPeriod();
        this.RegisterGrainTimer(static (grain, _) => grain.Sweep(), this, new GrainTimerCreationOptions(period, period) { Interleave = true });
        return Task.CompletedTask;
    }

    private TimeSpan SweepPeriod() => TimeSpan.FromTicks(Math.Clamp(_lifetime.Ticks / 4, TimeSpan.TicksPerSecond, TimeSpan.TicksPerMinute));

    private Task Sweep()
    {
        _nextSweep = default;
        SweepIfDue();
        return Task.CompletedTask;
    }

    /// <summary>How long an entry lasts after its topic last announced itself: as long as the topic's position.</summary>
    public static TimeSpan LifetimeOf(NamespaceOptions ns) => ns.HistoryTtl + ns.PositionTtl;

    public Task<string[]> WatchAsync(string gatewayId)
    {
        _routes.Renew(gatewayId);
        SweepIfDue();
        return Task.FromResult(_topics.Keys.ToArray());
    }

    public Task<TopicAnnounced[]> WatchPositionsAsync(string gatewayId)
    {
        _routes.Renew(gatewayId);
        SweepIfDue();
        return Task.FromResult(_topics.Select(t => new TopicAnnounced(t.Key, t.Value.Epoch, t.Value.Head)).ToArray());
    }

    public async Task AnnounceAsync(string topic, string epoch, long head)
    {
        SweepIfDue();
        var expires = time.GetUtcNow() + _lifetime;
        if (_topics.TryGetValue(topic, out var known))
        {
            known.Expires = expires;
            return;
        }

        if (_topics.Count >= MaxTopics)
        {
            if (!_full)
            {
                _full = true;
                GrainsLog.DirectoryFull(logger, this.GetPrimaryKeyString(), MaxTopics);
            }

            return;
        }

        _topics.Add(topic, new Entry(epoch, head) { Expires = expires });
        await _routes.SendAsync(new TopicAnnounced(topic, epoch, head), _onRouteFailure);
    }

    /// <summary>Drops lapsed entries, at most every quarter of their lifetime (between a second and a minute).</summary>
    private void SweepIfDue()
    {
        var now = time.GetUtcNow();
        if (now < _nextSweep)
        {
            return;
        }

        _nextSweep = now + SweepPeriod();
        var dropped = 0;
        foreach (var lapsed in _topics.Where(t => t.Value.Expires <= now).Select(t => t.Key).ToArray())
        {
            _topics.Remove(lapsed);
            _full = false;
            dropped++;
        }

        // A dictionary keeps the size of its peak: once most of it lapsed, it shrinks to what is left (issue 16).
        if (dropped > 0 && _topics.Count < _topics.Capacity / 4)
        {
            _topics.TrimExcess();
        }
    }

    private sealed class Entry(string epoch, long head)
    {
        public string Epoch { get; } = epoch;

        public long Head { get; } = head;

        public DateTimeOffset Expires { get; set; }
    }
}

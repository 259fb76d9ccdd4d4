using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace OrleansPush.Grains;

/// <inheritdoc cref="INamespaceGrain"/>
public sealed class NamespaceGrain(ILogger<NamespaceGrain> logger, IOptions<RoutingOptions> routing, TimeProvider time) : Grain, INamespaceGrain
{
    /// <summary>Most topics one directory remembers; past it new topics are not announced (and a warning says so).</summary>
    public const int MaxTopics = 100_000;

    /// <summary>Each known topic with the position it announced.</summary>
    private readonly Dictionary<string, TopicPosition> _topics = new(StringComparer.Ordinal);
    private GatewayRoutes _routes = null!;
    private Action<string, Exception> _onRouteFailure = null!;
    private bool _full;

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        var ns = this.GetPrimaryKeyString();
        _routes = new GatewayRoutes(this.GetStreamProvider(PushNames.StreamProvider), time, routing.Value.Lease);
        _onRouteFailure = (gateway, ex) => GrainsLog.RouteFailed(logger, ns + ":*", gateway, ex);
        return Task.CompletedTask;
    }

    public Task<string[]> WatchAsync(string gatewayId)
    {
        _routes.Renew(gatewayId);
        return Task.FromResult(_topics.Keys.ToArray());
    }

    public Task<TopicAnnounced[]> WatchPositionsAsync(string gatewayId)
    {
        _routes.Renew(gatewayId);
        return Task.FromResult(_topics.Select(t => new TopicAnnounced(t.Key, t.Value.Epoch, t.Value.Seq)).ToArray());
    }

    public async Task AnnounceAsync(string topic, string epoch, long head)
    {
        if (_topics.ContainsKey(topic))
        {
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

        _topics.Add(topic, new TopicPosition(epoch, head));
        await _routes.SendAsync(new TopicAnnounced(topic, epoch, head), _onRouteFailure);
    }
}

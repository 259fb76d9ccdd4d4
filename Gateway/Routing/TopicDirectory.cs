using System.Collections.Concurrent;

namespace OrleansPush.Gateway.Routing;

/// <summary>
/// The namespace directories this gateway watches, for wildcard subscriptions: a watch is a lease with the
/// namespace's grain, renewed with the topic leases; new topics arrive on the gateway's stream as
/// <see cref="TopicAnnounced"/>, and each renewal lists the namespace again with each topic's announced position, which
/// also catches a lost announcement: such a topic is subscribed from where it would have been, not from now.
/// </summary>
public sealed class TopicDirectory(IClusterClient cluster, GatewayIdentity identity, ILogger<TopicDirectory> logger)
{
    private readonly ConcurrentDictionary<string, bool> _watched = new(StringComparer.Ordinal);

    /// <summary>A topic to consider, with the position to subscribe from when it is new to a subscription.</summary>
    public event Action<string, Since?>? TopicFound;

    /// <summary>Starts (or renews) watching <paramref name="ns"/>; returns the topics known now.</summary>
    public Task<string[]> WatchAsync(string ns)
    {
        _watched[ns] = true;
        return cluster.GetGrain<INamespaceGrain>(ns).WatchAsync(identity.Id);
    }

    /// <summary>As <see cref="WatchAsync"/>, with the position each topic announced.</summary>
    public Task<TopicAnnounced[]> WatchPositionsAsync(string ns)
    {
        _watched[ns] = true;
        return cluster.GetGrain<INamespaceGrain>(ns).WatchPositionsAsync(identity.Id);
    }

    /// <summary>No wildcard subscription here needs <paramref name="ns"/> any more: its lease lapses by itself.</summary>
    public void Unwatch(string ns) => _watched.TryRemove(ns, out _);

    public void OnAnnounced(TopicAnnounced announced) => TopicFound?.Invoke(announced.Topic, new Since(announced.Epoch, announced.Head));

    public async Task RenewAsync(CancellationToken cancellationToken)
    {
        foreach (var ns in _watched.Keys)
        {
            cancellationToken.ThrowIfCancellationRequested();
            try
            {
                foreach (var known in await cluster.GetGrain<INamespaceGrain>(ns).WatchPositionsAsync(identity.Id))
                {
                    OnAnnounced(known);
                }
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                GatewayLog.LeaseRenewFailed(logger, ns + ":*", ex);
            }
        }
    }
}

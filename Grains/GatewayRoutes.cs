using Orleans.Streams;

namespace OrleansPush.Grains;

/// <summary>
/// The gateways a grain routes to: an interest lease per gateway, and that gateway's stream. A gateway that stops
/// renewing drops out when its lease lapses, so a dead gateway needs no clean-up by hand.
/// </summary>
internal sealed class GatewayRoutes(IStreamProvider streams, TimeProvider time, TimeSpan lease)
{
    /// <summary>A stream write that takes longer (its queue's silo died) counts as failed rather than holding up the
    /// topic: the gateway finds the gap by seq and reads it from history.</summary>
    public static readonly TimeSpan WriteTimeout = TimeSpan.FromSeconds(2);

    // Made at the first lease: most topics are never routed to a gateway (issue 16: memory per topic).
    private Dictionary<string, Route>? _routes;

    public int Count => _routes?.Count ?? 0;

    public void Renew(string gatewayId)
    {
        var expires = time.GetUtcNow() + lease;
        _routes ??= new(StringComparer.Ordinal);
        if (_routes.TryGetValue(gatewayId, out var route))
        {
            route.Expires = expires;
            return;
        }

        var stream = streams.GetStream<GatewayEvent>(StreamId.Create(PushNames.GatewayStreamNamespace, gatewayId));
        _routes[gatewayId] = new Route(gatewayId, stream) { Expires = expires };
    }

    public bool Remove(string gatewayId) => _routes?.Remove(gatewayId) == true;

    /// <summary>How many gateways hold a lease that has not lapsed.</summary>
    public int LiveCount()
    {
        DropExpired();
        return Count;
    }

    public string[] LiveGateways()
    {
        DropExpired();
        return _routes is null ? [] : [.. _routes.Keys];
    }

    /// <summary>Whether <paramref name="gatewayId"/> holds a lease that has not lapsed.</summary>
    public bool IsLive(string gatewayId) => _routes is not null && _routes.TryGetValue(gatewayId, out var route) && route.Expires > time.GetUtcNow();

    /// <summary>Writes the event once to each live gateway's stream. A failed write is reported through
    /// <paramref name="onFailure"/> and does not stop the others: gateways repair gaps from history.</summary>
    public Task SendAsync(GatewayEvent e, Action<string, Exception> onFailure)
    {
        DropExpired();
        switch (_routes?.Count ?? 0)
        {
            case 0:
                return Task.CompletedTask;
            case 1:
                foreach (var only in _routes!.Values)
                {
                    return SendOneAsync(only, e, onFailure);
                }

                return Task.CompletedTask;
            default:
                var tasks = new Task[_routes!.Count];
                var i = 0;
                foreach (var route in _routes.Values)
                {
                    tasks[i++] = SendOneAsync(route, e, onFailure);
                }

                return Task.WhenAll(tasks);
        }
    }

    private static async Task SendOneAsync(Route route, GatewayEvent e, Action<string, Exception> onFailure)
    {
        try
        {
            await route.Stream.OnNextAsync(e).WaitAsync(WriteTimeout);
        }
        catch (Exception ex)
        {
            onFailure(route.GatewayId, ex);
        }
    }

    private void DropExpired()
    {
        if (_routes is null)
        {
            return;
        }

        var now = time.GetUtcNow();
        foreach (var (gatewayId, route) in _routes)
        {
            if (route.Expires <= now)
            {
                _routes.Remove(gatewayId); // removing while enumerating a Dictionary is allowed
            }
        }
    }

    private sealed class Route(string gatewayId, IAsyncStream<GatewayEvent> stream)
    {
        public string GatewayId { get; } = gatewayId;

        public IAsyncStream<GatewayEvent> Stream { get; } = stream;

        public DateTimeOffset Expires { get; set; }
    }
}

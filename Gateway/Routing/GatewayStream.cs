using Microsoft.Extensions.Options;
using Orleans.Streams;

namespace OrleansPush.Gateway.Routing;

/// <summary>
/// Consumes this gateway's own stream and keeps its leases alive. Stream subscriptions are soft state (a client's
/// subscription can vanish when silos restart), so each renewal tick checks the subscription and makes it again
/// when it is gone.
/// </summary>
internal sealed class GatewayStream(
    IClusterClient cluster,
    GatewayIdentity identity,
    TopicRouter router,
    UserConnections users,
    TopicDirectory directory,
    Security.TokenRevocations revocations,
    IOptions<RoutingOptions> routing,
    IEnumerable<IGatewayEventFilter> filters,
    ILogger<GatewayStream> logger) : BackgroundService, IAsyncObserver<GatewayEvent>
{
    private readonly IGatewayEventFilter? _filter = filters.LastOrDefault();
    private IAsyncStream<GatewayEvent>? _stream;

    public override async Task StartAsync(CancellationToken cancellationToken)
    {
        _stream = cluster.GetStreamProvider(PushNames.StreamProvider)
            .GetStream<GatewayEvent>(StreamId.Create(PushNames.GatewayStreamNamespace, identity.Id));
        await _stream.SubscribeAsync(this);
        GatewayLog.StreamSubscribed(logger, identity.Id);
        await base.StartAsync(cancellationToken);
    }

    /// <summary>A gateway that stops says so: its stream subscription goes at once instead of when a delivery to it
    /// times out.</summary>
    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken);
        if (_stream is null)
        {
            return;
        }

        try
        {
            foreach (var handle in await _stream.GetAllSubscriptionHandles())
            {
                await handle.UnsubscribeAsync();
            }
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            GatewayLog.StreamError(logger, ex);
        }
    }

    public Task OnNextAsync(GatewayEvent item, StreamSequenceToken? token = null)
    {
        if (_filter is { } filter)
        {
            filter.OnEvent(item, Handle);
        }
        else
        {
            Handle(item);
        }

        return Task.CompletedTask;
    }

    private void Handle(GatewayEvent item)
    {
        switch (item)
        {
            case TopicMessage message:
                router.OnMessage(message);
                break;
            case TopicMessageBatch batch:
                router.OnMessages(batch);
                break;
            case PresenceChanged presence:
                router.OnPresence(presence);
                break;
            case TopicAnnounced announced:
                directory.OnAnnounced(announced);
                break;
            case UserSubscriptionChanged change:
                users.OnSubscriptionChanged(change);
                break;
            case UserTokensRevoked revoked:
                revocations.Apply(revoked.UserId, revoked.RevokedBefore);
                break;
            case UserDisconnectRequested disconnect:
                Array.ForEach(users.ConnectionsOf(disconnect.UserId), c => c.Close(WireCodes.Disconnected));
                break;
        }
    }

    public Task OnCompletedAsync() => Task.CompletedTask;

    public Task OnErrorAsync(Exception ex)
    {
        GatewayLog.StreamError(logger, ex);
        return Task.CompletedTask;
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var renew = routing.Value.RenewInterval;
        var sweep = TimeSpan.FromSeconds(Math.Clamp(renew.TotalSeconds / 4, 0.25, 5));
        var nextRenew = DateTimeOffset.UtcNow + renew;
        using var timer = new PeriodicTimer(sweep);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            router.Sweep();
            if (DateTimeOffset.UtcNow < nextRenew)
            {
                continue;
            }

            nextRenew = DateTimeOffset.UtcNow + renew;
            try
            {
                await EnsureSubscribedAsync();
                await router.RenewAsync(stoppingToken);
                await users.RenewAsync(stoppingToken);
                await directory.RenewAsync(stoppingToken);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                GatewayLog.RenewFailed(logger, ex);
            }
        }
    }

    private async Task EnsureSubscribedAsync()
    {
        if (_stream is null)
        {
            return;
        }

        var handles = await _stream.GetAllSubscriptionHandles();
        if (handles.Count == 0)
        {
            GatewayLog.StreamResubscribed(logger, identity.Id);
            await _stream.SubscribeAsync(this);
        }
        else if (handles.Count > 1)
        {
            foreach (var extra in handles.Skip(1))
            {
                await extra.UnsubscribeAsync();
            }
        }
    }
}

/// <summary>A seam on the gateway's stream, where tests inject the faults a stream may have (loss, duplication, delay,
/// reordering, corruption): it sees every event before the gateway handles it and calls <c>handle</c> for what should be
/// handled, any number of times, now or later. Without one registered, every event is handled at once, as it comes.
/// The gateway must keep its guarantees whatever a filter does; it is never registered in production.</summary>
public interface IGatewayEventFilter
{
    void OnEvent(GatewayEvent item, Action<GatewayEvent> handle);
}

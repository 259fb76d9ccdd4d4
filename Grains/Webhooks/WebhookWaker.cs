using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using OrleansPush.Hosting.Webhooks;

namespace OrleansPush.Grains.Webhooks;

/// <summary>
/// Wakes every webhook dispatcher when this silo has joined and whenever a silo of the cluster dies: a dispatcher that
/// was delivering on the dead silo resumes elsewhere from its stored position even when no new event comes to wake it.
/// Driven by membership changes, so an idle cluster costs nothing.
/// </summary>
public sealed class WebhookWaker(IClusterMembershipService membership, IGrainFactory grains, IOptions<WebhookOptions> options,
    ILogger<WebhookWaker> logger) : BackgroundService
{
    private static readonly TimeSpan RetryDelay = TimeSpan.FromSeconds(1);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var dead = new HashSet<SiloAddress>();
        var first = true;
        try
        {
            await foreach (var snapshot in membership.MembershipUpdates.WithCancellation(stoppingToken))
            {
                var died = false;
                foreach (var (silo, member) in snapshot.Members)
                {
                    if (member.Status == SiloStatus.Dead && dead.Add(silo))
                    {
                        died = true;
                    }
                }

                if (first || died)
                {
                    first = false;
                    await WakeAllAsync(stoppingToken);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    private async Task WakeAllAsync(CancellationToken cancellationToken)
    {
        var o = options.Value;
        for (var attempt = 1; attempt <= 30 && !cancellationToken.IsCancellationRequested; attempt++)
        {
            try
            {
                foreach (var name in o.Endpoints.Keys)
                {
                    for (var shard = 0; shard < o.Shards; shard++)
                    {
                        await grains.GetGrain<IWebhookDispatcherGrain>(WebhookOptions.DispatcherKey(name, shard)).WakeAsync();
                    }
                }

                return;
            }
            catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
            {
                WakerLog.WakeFailed(logger, ex);
                await Task.Delay(RetryDelay, cancellationToken);
            }
        }
    }
}

internal static partial class WakerLog
{
    [LoggerMessage(EventId = 1221, Level = LogLevel.Warning, Message = "Waking the webhook dispatchers failed (the silo may still be starting); trying again")]
    public static partial void WakeFailed(ILogger logger, Exception exception);
}

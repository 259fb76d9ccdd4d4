using OrleansPush.Hosting.Webhooks;

namespace OrleansPush.Grains.Webhooks;

/// <summary>
/// The first and last of a grain's gateway leases as webhook events: a topic's first subscriber anywhere in the cluster
/// (<c>topic.occupied</c>) and its last one gone (<c>topic.vacated</c>), or a user's first and last connection. The grain
/// calls <see cref="ChangedAsync"/> after each lease change; a lease that lapses (its gateway died) is found by a timer
/// that exists only while the grain is occupied and some endpoint wants these events.
/// </summary>
internal sealed class LeaseOccupancy(GatewayRoutes routes, WebhookEvents events, string firstType, string lastType, string? topic, string? user,
    TimeSpan lease)
{
    private readonly string _orderKey = topic ?? TopicName.Personal(user!);
    private bool _occupied;
    private IGrainTimer? _watch;

    public Task ChangedAsync(IGrainBase grain)
    {
        if (!events.Wants(firstType) && !events.Wants(lastType))
        {
            return Task.CompletedTask;
        }

        var occupied = routes.LiveCount() > 0;
        if (occupied == _occupied)
        {
            return Task.CompletedTask;
        }

        _occupied = occupied;
        if (occupied)
        {
            var period = lease / 2;
            _watch ??= grain.RegisterGrainTimer(static (s, _) => s.Occupancy.ChangedAsync(s.Grain), (Occupancy: this, Grain: grain),
                new GrainTimerCreationOptions(period, period));
        }
        else
        {
            _watch?.Dispose();
            _watch = null;
        }

        return events.EmitAsync(occupied ? firstType : lastType, _orderKey, topic, user);
    }
}

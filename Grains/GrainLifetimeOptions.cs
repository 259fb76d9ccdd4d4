using Microsoft.Extensions.Options;

namespace OrleansPush.Grains;

/// <summary>How long grains stay in memory without work (<c>OrleansPush:Silo</c>).</summary>
public sealed class GrainLifetimeOptions
{
    public const string Section = "OrleansPush:Silo";

    public static readonly TimeSpan DefaultIdleGrainTimeout = TimeSpan.FromMinutes(2);

    /// <summary>A topic or user grain that got no call for this long deactivates (its history, position and
    /// subscriptions stay in the store; the next call activates it again). A gateway's lease renewals and publishes are
    /// calls, so a grain with a live lease or traffic never idles that long: the timeout is at least the routing lease.
    /// Orleans collects idle grains every half of it (or every minute, whichever is sooner), so a grain goes between one
    /// and one and a half timeouts after its last call.</summary>
    public TimeSpan IdleGrainTimeout { get; set; } = DefaultIdleGrainTimeout;
}

public sealed class GrainLifetimeOptionsValidator(TimeSpan lease) : IValidateOptions<GrainLifetimeOptions>
{
    public ValidateOptionsResult Validate(string? name, GrainLifetimeOptions o) =>
        o.IdleGrainTimeout < lease || o.IdleGrainTimeout > TimeSpan.FromDays(1)
            ? ValidateOptionsResult.Fail(
                $"{GrainLifetimeOptions.Section}:IdleGrainTimeout must be between {RoutingOptions.Section}:Lease ({lease}) and 1 day (is {o.IdleGrainTimeout}).")
            : ValidateOptionsResult.Success;
}

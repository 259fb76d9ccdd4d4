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

    /// <summary>Orleans' own default is 1,000,000 entries, its dictionary allocated at that size up front (9 MB).</summary>
    public const int DefaultLocationCacheSize = 100_000;

    public static readonly TimeSpan DefaultLocationCacheTtl = TimeSpan.FromMinutes(1);

    /// <summary>Most grain locations a silo caches (Orleans' <c>GrainDirectoryOptions.CacheSize</c>; least recently used
    /// go first; 0: no cache). Each entry is about 230 bytes and outlives its grain's deactivation until it is evicted or
    /// lapses (<see cref="LocationCacheTtl"/>): under churn the cache holds every grain called within that time, so both
    /// bound it (issue 16). A cached location saves a directory lookup on a call to a grain on another silo.</summary>
    public int LocationCacheSize { get; set; } = DefaultLocationCacheSize;

    /// <summary>A cached grain location not used for this long lapses (Orleans' <c>GrainDirectoryOptions.MaximumCacheTTL</c>,
    /// 4 min by default; its sweep runs every such period, so an entry goes between one and two of them after its last
    /// use).</summary>
    public TimeSpan LocationCacheTtl { get; set; } = DefaultLocationCacheTtl;
}

public sealed class GrainLifetimeOptionsValidator(TimeSpan lease) : IValidateOptions<GrainLifetimeOptions>
{
    public ValidateOptionsResult Validate(string? name, GrainLifetimeOptions o)
    {
        if (o.IdleGrainTimeout < lease || o.IdleGrainTimeout > TimeSpan.FromDays(1))
        {
            return ValidateOptionsResult.Fail(
                $"{GrainLifetimeOptions.Section}:IdleGrainTimeout must be between {RoutingOptions.Section}:Lease ({lease}) and 1 day (is {o.IdleGrainTimeout}).");
        }

        if (o.LocationCacheSize is < 0 or > 10_000_000)
        {
            return ValidateOptionsResult.Fail($"{GrainLifetimeOptions.Section}:LocationCacheSize must be between 0 and 10,000,000 (is {o.LocationCacheSize}).");
        }

        return o.LocationCacheTtl < TimeSpan.FromSeconds(1) || o.LocationCacheTtl > TimeSpan.FromDays(1)
            ? ValidateOptionsResult.Fail($"{GrainLifetimeOptions.Section}:LocationCacheTtl must be between 1 second and 1 day (is {o.LocationCacheTtl}).")
            : ValidateOptionsResult.Success;
    }
}

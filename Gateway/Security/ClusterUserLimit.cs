using Microsoft.Extensions.Options;
using OrleansPush.Gateway.Routing;

namespace OrleansPush.Gateway.Security;

/// <summary>
/// <c>ConnectionsPerUser</c> across the cluster: this gateway counts its own connections of each user and, at every
/// connect, asks the user's grain whether that count plus what the other gateways reported stays within the limit
/// (<see cref="IUserGrain.TryConnectAsync"/>); a close reports the new count. The ask is bounded by
/// <see cref="LimitsOptions.ConnectionsPerUserWait"/>; a grain that does not answer in time admits the connection or
/// refuses it as <see cref="LimitsOptions.ConnectionsPerUserWhenUnreachable"/> says.
/// </summary>
public sealed class ClusterUserLimit(IClusterClient cluster, GatewayIdentity identity, IOptions<LimitsOptions> options, ILogger<ClusterUserLimit> logger)
{
    private readonly Dictionary<string, int> _here = new(StringComparer.Ordinal);
    private readonly LimitsOptions _options = options.Value;

    public bool Enabled => _options.ConnectionsPerUser > 0;

    /// <summary>A slot of the user's cluster-wide count, released by disposing it; null with the refusal's code
    /// (<c>rate_limited</c> at the limit, <c>unavailable</c> when the grain did not answer and the policy is closed).</summary>
    public async Task<(IDisposable? Slot, string? Refusal)> TryOpenAsync(string userId)
    {
        var count = Change(userId, +1);
        bool admitted;
        try
        {
            admitted = await cluster.GetGrain<IUserGrain>(userId).TryConnectAsync(identity.Id, count, _options.ConnectionsPerUser)
                .WaitAsync(_options.ConnectionsPerUserWait);
        }
        catch (Exception ex)
        {
            SecurityLog.UserCountUnreachable(logger, userId, _options.ConnectionsPerUserWhenUnreachable.ToString(), ex);
            if (_options.ConnectionsPerUserWhenUnreachable == UnreachablePolicy.Open)
            {
                return (new Slot(this, userId), null);
            }

            Release(userId);
            return (null, WireCodes.Unavailable);
        }

        if (!admitted)
        {
            Release(userId);
            return (null, WireCodes.RateLimited);
        }

        return (new Slot(this, userId), null);
    }

    private int Change(string userId, int delta)
    {
        lock (_here)
        {
            var count = _here.GetValueOrDefault(userId) + delta;
            if (count > 0)
            {
                _here[userId] = count;
            }
            else
            {
                _here.Remove(userId);
            }

            return count;
        }
    }

    private void Release(string userId)
    {
        var count = Change(userId, -1);
        _ = ReportAsync();

        async Task ReportAsync()
        {
            try
            {
                await cluster.GetGrain<IUserGrain>(userId).ReportConnectionsAsync(identity.Id, count);
            }
            catch (Exception ex)
            {
                // The grain's count of this gateway stays high until the next report or the lease lapses: it errs on
                // the side of the limit.
                SecurityLog.UserCountReportFailed(logger, userId, ex);
            }
        }
    }

    private sealed class Slot(ClusterUserLimit owner, string userId) : IDisposable
    {
        private int _released;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _released, 1) == 0)
            {
                owner.Release(userId);
            }
        }
    }
}

using System.Threading.RateLimiting;
using Microsoft.Extensions.Options;

namespace OrleansPush.Gateway.Security;

/// <summary>
/// The gateway's limiters (System.Threading.RateLimiting): a token bucket of messages per connection, a token bucket of
/// handshakes for the whole gateway, and concurrency limits of connections per user and per IP. Partitions of idle keys
/// are dropped by the partitioned limiters themselves, so memory follows the live connections, not every key ever seen.
/// </summary>
public sealed class ConnectionLimits : IDisposable
{
    private readonly PartitionedRateLimiter<string>? _messages;
    private readonly RateLimiter? _handshakes;
    private readonly PartitionedRateLimiter<string>? _perUser;
    private readonly PartitionedRateLimiter<string>? _perIp;

    public ConnectionLimits(IOptions<LimitsOptions> options)
    {
        var o = options.Value;
        if (o.MessagesPerSecond > 0)
        {
            var bucket = new TokenBucketRateLimiterOptions
            {
                TokenLimit = Math.Max(o.MessageBurst, o.MessagesPerSecond),
                TokensPerPeriod = o.MessagesPerSecond,
                ReplenishmentPeriod = TimeSpan.FromSeconds(1),
                QueueLimit = 0,
                AutoReplenishment = true,
            };
            _messages = PartitionedRateLimiter.Create<string, string>(id => RateLimitPartition.GetTokenBucketLimiter(id, _ => bucket));
        }

        if (o.HandshakesPerSecond > 0)
        {
            _handshakes = new TokenBucketRateLimiter(new TokenBucketRateLimiterOptions
            {
                TokenLimit = o.HandshakesPerSecond,
                TokensPerPeriod = o.HandshakesPerSecond,
                ReplenishmentPeriod = TimeSpan.FromSeconds(1),
                QueueLimit = 0,
                AutoReplenishment = true,
            });
        }

        _perUser = Concurrency(o.ConnectionsPerUser);
        _perIp = Concurrency(o.ConnectionsPerIp);
    }

    /// <summary>Takes one message from the connection's bucket; false when it is empty (answer <c>rate_limited</c>,
    /// keep the connection: the bucket refills every second).</summary>
    public bool TryMessage(string connectionId)
    {
        if (_messages is null)
        {
            return true;
        }

        using var lease = _messages.AttemptAcquire(connectionId);
        return lease.IsAcquired;
    }

    public bool TryHandshake()
    {
        if (_handshakes is null)
        {
            return true;
        }

        using var lease = _handshakes.AttemptAcquire();
        return lease.IsAcquired;
    }

    /// <summary>Holds a connection slot for the user and the IP address until the returned lease is disposed; null
    /// with the name of the limit when one is full.</summary>
    public IDisposable? TryConnect(string? userId, string? ip, out string? refusedBy)
    {
        refusedBy = null;
        RateLimitLease? user = null;
        if (_perUser is not null && userId is not null)
        {
            user = _perUser.AttemptAcquire(userId);
            if (!user.IsAcquired)
            {
                user.Dispose();
                refusedBy = Connections.ConnectionDoor.Limits.ConnectionsPerUser;
                return null;
            }
        }

        RateLimitLease? address = null;
        if (_perIp is not null && ip is not null)
        {
            address = _perIp.AttemptAcquire(ip);
            if (!address.IsAcquired)
            {
                address.Dispose();
                user?.Dispose();
                refusedBy = Connections.ConnectionDoor.Limits.ConnectionsPerIp;
                return null;
            }
        }

        return new Leases(user, address);
    }

    public void Dispose()
    {
        _messages?.Dispose();
        _handshakes?.Dispose();
        _perUser?.Dispose();
        _perIp?.Dispose();
    }

    private static PartitionedRateLimiter<string>? Concurrency(int limit) =>
        limit <= 0 ? null : PartitionedRateLimiter.Create<string, string>(key => RateLimitPartition.GetConcurrencyLimiter(key,
            _ => new ConcurrencyLimiterOptions { PermitLimit = limit, QueueLimit = 0 }));

    private sealed class Leases(RateLimitLease? user, RateLimitLease? address) : IDisposable
    {
        public void Dispose()
        {
            user?.Dispose();
            address?.Dispose();
        }
    }
}

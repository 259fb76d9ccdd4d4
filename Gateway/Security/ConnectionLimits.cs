using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.Options;
using OrleansPush.Gateway.Connections;

namespace OrleansPush.Gateway.Security;

/// <summary>
/// The gateway's limiters: a token bucket of messages per connection, a token bucket of handshakes for the whole
/// gateway, and counts of open connections per user and per IP. None runs a timer: a bucket refills by the time elapsed
/// since it was last drawn on, a connection's bucket lives as long as its connection, and a count goes when it reaches
/// zero, so a gateway with nothing to do does nothing (System.Threading.RateLimiting's partitioned limiters each wake
/// ten times a second, and an auto-replenishing bucket once a second, whether or not anyone is connected).
/// </summary>
public sealed class ConnectionLimits
{
    private readonly LimitsOptions _options;
    private readonly TimeProvider _time;
    private readonly ConditionalWeakTable<PushConnection, TokenBucket> _messages = [];
    private readonly TokenBucket? _handshakes;
    private readonly OpenCounts? _perUser;
    private readonly OpenCounts? _perIp;

    public ConnectionLimits(IOptions<LimitsOptions> options, TimeProvider time)
    {
        _options = options.Value;
        _time = time;
        if (_options.HandshakesPerSecond > 0)
        {
            _handshakes = new TokenBucket(_options.HandshakesPerSecond, _options.HandshakesPerSecond, time);
        }

        _perUser = _options.ConnectionsPerUser > 0 ? new OpenCounts(_options.ConnectionsPerUser) : null;
        _perIp = _options.ConnectionsPerIp > 0 ? new OpenCounts(_options.ConnectionsPerIp) : null;
    }

    /// <summary>Takes one message from the connection's bucket; false when it is empty (answer <c>rate_limited</c>,
    /// keep the connection: the bucket refills at <see cref="LimitsOptions.MessagesPerSecond"/>).</summary>
    public bool TryMessage(PushConnection connection)
    {
        if (_options.MessagesPerSecond <= 0)
        {
            return true;
        }

        var bucket = _messages.GetValue(connection,
            _ => new TokenBucket(Math.Max(_options.MessageBurst, _options.MessagesPerSecond), _options.MessagesPerSecond, _time));
        return bucket.TryTake();
    }

    public bool TryHandshake() => _handshakes?.TryTake() ?? true;

    /// <summary>Holds a connection slot for the user and the IP address until the returned lease is disposed; null
    /// with the name of the limit when one is full.</summary>
    public IDisposable? TryConnect(string? userId, string? ip, out string? refusedBy)
    {
        refusedBy = null;
        var user = _perUser is not null && userId is not null ? userId : null;
        if (user is not null && !_perUser!.TryOpen(user))
        {
            refusedBy = Connections.ConnectionDoor.Limits.ConnectionsPerUser;
            return null;
        }

        var address = _perIp is not null && ip is not null ? ip : null;
        if (address is not null && !_perIp!.TryOpen(address))
        {
            if (user is not null)
            {
                _perUser!.Close(user);
            }

            refusedBy = Connections.ConnectionDoor.Limits.ConnectionsPerIp;
            return null;
        }

        return new Slots(this, user, address);
    }

    /// <summary>Tokens that refill continuously at <c>perSecond</c> up to <c>limit</c>, computed when drawn on.</summary>
    private sealed class TokenBucket
    {
        private readonly Lock _lock = new();
        private readonly double _limit;
        private readonly double _perTick;
        private readonly TimeProvider _time;
        private double _tokens;
        private long _stamp;

        public TokenBucket(double limit, double perSecond, TimeProvider time)
        {
            _limit = limit;
            _perTick = perSecond / time.TimestampFrequency;
            _time = time;
            _tokens = limit;
            _stamp = time.GetTimestamp();
        }

        public bool TryTake()
        {
            var now = _time.GetTimestamp();
            lock (_lock)
            {
                _tokens = Math.Min(_limit, _tokens + (now - _stamp) * _perTick);
                _stamp = now;
                if (_tokens < 1)
                {
                    return false;
                }

                _tokens -= 1;
                return true;
            }
        }
    }

    /// <summary>Open connections per key, at most <c>limit</c> each; a key with none open is forgotten.</summary>
    private sealed class OpenCounts(int limit)
    {
        private readonly ConcurrentDictionary<string, int> _open = new(StringComparer.Ordinal);

        public bool TryOpen(string key)
        {
            while (true)
            {
                if (!_open.TryGetValue(key, out var count))
                {
                    if (_open.TryAdd(key, 1))
                    {
                        return true;
                    }
                }
                else if (count >= limit)
                {
                    return false;
                }
                else if (_open.TryUpdate(key, count + 1, count))
                {
                    return true;
                }
            }
        }

        public void Close(string key)
        {
            while (_open.TryGetValue(key, out var count))
            {
                if (count <= 1 ? _open.TryRemove(KeyValuePair.Create(key, count)) : _open.TryUpdate(key, count - 1, count))
                {
                    return;
                }
            }
        }
    }

    private sealed class Slots(ConnectionLimits limits, string? user, string? address) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) != 0)
            {
                return;
            }

            if (user is not null)
            {
                limits._perUser!.Close(user);
            }

            if (address is not null)
            {
                limits._perIp!.Close(address);
            }
        }
    }
}

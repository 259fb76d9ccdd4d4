using OrleansPush.Gateway.Connections;

namespace OrleansPush.Gateway.Routing;

/// <summary>
/// The users with a connection on this gateway. A user's connections are each subscribed to the personal channel and
/// to the topics a backend subscribed the user to; this gateway holds a lease with the user's grain so that changes
/// to those subscriptions reach it.
/// </summary>
public sealed class UserConnections(IClusterClient cluster, GatewayIdentity identity, ILogger<UserConnections> logger)
{
    private readonly Dictionary<string, HashSet<PushConnection>> _byUser = new(StringComparer.Ordinal);

    /// <summary>Raised for each local connection of a user whose server-side subscriptions changed.</summary>
    public event Action<PushConnection, string, bool>? SubscriptionChanged;

    /// <summary>Adds a user's connection and returns the user's server-side subscriptions.</summary>
    public async Task<string[]> AddAsync(PushConnection connection)
    {
        var userId = connection.UserId ?? throw new ArgumentException("The connection has no user.", nameof(connection));
        lock (_byUser)
        {
            if (!_byUser.TryGetValue(userId, out var set))
            {
                _byUser[userId] = set = [];
            }

            set.Add(connection);
        }

        return await cluster.GetGrain<IUserGrain>(userId).AttachAsync(identity.Id);
    }

    public void Remove(PushConnection connection)
    {
        if (connection.UserId is not { } userId)
        {
            return;
        }

        lock (_byUser)
        {
            if (_byUser.TryGetValue(userId, out var set) && set.Remove(connection) && set.Count == 0)
            {
                // The lease lapses by itself; a user who comes back quickly keeps it.
                _byUser.Remove(userId);
            }
        }
    }

    public PushConnection[] ConnectionsOf(string userId)
    {
        lock (_byUser)
        {
            return _byUser.TryGetValue(userId, out var set) ? [.. set] : [];
        }
    }

    public int UserCount
    {
        get
        {
            lock (_byUser)
            {
                return _byUser.Count;
            }
        }
    }

    public void OnSubscriptionChanged(UserSubscriptionChanged change)
    {
        foreach (var connection in ConnectionsOf(change.UserId))
        {
            SubscriptionChanged?.Invoke(connection, change.Topic, change.Subscribed);
        }
    }

    public async Task RenewAsync(CancellationToken cancellationToken)
    {
        string[] users;
        lock (_byUser)
        {
            users = [.. _byUser.Keys];
        }

        await Parallel.ForEachAsync(
            users,
            new ParallelOptions { MaxDegreeOfParallelism = 32, CancellationToken = cancellationToken },
            async (user, _) =>
            {
                try
                {
                    await cluster.GetGrain<IUserGrain>(user).AttachAsync(identity.Id);
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    GatewayLog.LeaseRenewFailed(logger, TopicName.Personal(user), ex);
                }
            });
    }
}

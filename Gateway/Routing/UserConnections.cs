using Microsoft.Extensions.Options;
using OrleansPush.Gateway.Connections;
using OrleansPush.Gateway.Hosting;

namespace OrleansPush.Gateway.Routing;

/// <summary>
/// The users with a connection on this gateway. A user's connections are each subscribed to the personal channel and
/// to the topics a backend subscribed the user to; this gateway holds a lease with the user's grain so that changes
/// to those subscriptions reach it.
/// <para>A change arrives as a <see cref="UserSubscriptionChanged"/> on the gateway's stream, which can be lost (a
/// lease the grain forgot when it moved, a stream hop that failed). So the gateway also reconciles: at every attach and
/// every lease renewal the grain answers with its whole list and its version, and the connections of that user follow
/// the difference from what this gateway last applied. Versions keep a stale answer (or a late event) from undoing a
/// newer change: an event or answer older than the version applied is ignored; an answer with version 0 (no stored
/// list) is authoritative.</para>
/// </summary>
public sealed class UserConnections(IClusterClient cluster, GatewayIdentity identity, IOptions<GatewayOptions> options, ILogger<UserConnections> logger)
{
    private readonly Dictionary<string, UserEntry> _byUser = new(StringComparer.Ordinal);

    /// <summary>Raised for each local connection of a user whose server-side subscriptions changed (from the stream or
    /// found by reconciliation).</summary>
    public event Action<PushConnection, string, bool>? SubscriptionChanged;

    /// <summary>Adds a user's connection and returns the user's server-side subscriptions (the newest this gateway
    /// knows); the user's other connections here are reconciled with them.</summary>
    public async Task<string[]> AddAsync(PushConnection connection)
    {
        var userId = connection.UserId ?? throw new ArgumentException("The connection has no user.", nameof(connection));
        lock (_byUser)
        {
            if (!_byUser.TryGetValue(userId, out var entry))
            {
                _byUser[userId] = entry = new UserEntry();
            }

            entry.Connections.Add(connection);
        }

        var answer = await cluster.GetGrain<IUserGrain>(userId).SyncAsync(identity.Id);
        return Reconcile(userId, answer, except: connection);
    }

    /// <summary>Adds a user's connection on this gateway only (no grain call): it is found by
    /// <see cref="ConnectionsOf"/> but follows nothing of the user.</summary>
    public void AddLocal(PushConnection connection)
    {
        var userId = connection.UserId ?? throw new ArgumentException("The connection has no user.", nameof(connection));
        lock (_byUser)
        {
            if (!_byUser.TryGetValue(userId, out var entry))
            {
                _byUser[userId] = entry = new UserEntry();
            }

            entry.Connections.Add(connection);
        }
    }

    public void Remove(PushConnection connection)
    {
        if (connection.UserId is not { } userId)
        {
            return;
        }

        lock (_byUser)
        {
            if (_byUser.TryGetValue(userId, out var entry) && entry.Connections.Remove(connection) && entry.Connections.Count == 0)
            {
                _byUser.Remove(userId);
                _ = DetachAfterLingerAsync(userId);
            }
        }
    }

    /// <summary>Gives the user's lease back when the user has had no connection here for the linger (a user who comes
    /// back sooner keeps it), so the user's grain knows at once when its last connection in the cluster went
    /// (<c>user.disconnected</c>) rather than when the lease lapses. A connection that arrived while the detach was on
    /// its way attaches again.</summary>
    private async Task DetachAfterLingerAsync(string userId)
    {
        try
        {
            await Task.Delay(options.Value.EmptyTopicLinger);
            if (HasConnections(userId))
            {
                return;
            }

            var grain = cluster.GetGrain<IUserGrain>(userId);
            await grain.DetachAsync(identity.Id);
            if (HasConnections(userId))
            {
                await grain.SyncAsync(identity.Id);
            }
        }
        catch (Exception ex)
        {
            // The lease lapses by itself; this only makes it go sooner.
            GatewayLog.UserDetachFailed(logger, userId, ex);
        }
    }

    private bool HasConnections(string userId)
    {
        lock (_byUser)
        {
            return _byUser.ContainsKey(userId);
        }
    }

    /// <summary>The user's revocation second as this gateway knows it from the user's grain (an attach, a renewal or an
    /// event), or null when it holds nothing of the user from the grain (then ask the grain).</summary>
    public long? KnownRevokedBefore(string userId)
    {
        lock (_byUser)
        {
            return _byUser.TryGetValue(userId, out var entry) && entry.Synced ? entry.RevokedBefore : null;
        }
    }

    /// <summary>Records a revocation of the user's tokens (from the grain's event, or made here) and returns the user's
    /// connections here.</summary>
    public PushConnection[] Revoked(string userId, long revokedBefore)
    {
        lock (_byUser)
        {
            if (!_byUser.TryGetValue(userId, out var entry))
            {
                return [];
            }

            entry.RevokedBefore = Math.Max(entry.RevokedBefore, revokedBefore);
            return [.. entry.Connections];
        }
    }

    public PushConnection[] ConnectionsOf(string userId)
    {
        lock (_byUser)
        {
            return _byUser.TryGetValue(userId, out var entry) ? [.. entry.Connections] : [];
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
        PushConnection[] connections;
        lock (_byUser)
        {
            if (!_byUser.TryGetValue(change.UserId, out var entry) || (change.Version != 0 && change.Version <= entry.Version))
            {
                return;
            }

            if (change.Version != 0)
            {
                entry.Version = change.Version;
            }

            if (change.Subscribed)
            {
                entry.Topics.Add(change.Topic);
            }
            else
            {
                entry.Topics.Remove(change.Topic);
            }

            connections = [.. entry.Connections];
        }

        foreach (var connection in connections)
        {
            SubscriptionChanged?.Invoke(connection, change.Topic, change.Subscribed);
        }
    }

    /// <summary>Renews every user's lease and reconciles their connections with each answer.</summary>
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
                    Reconcile(user, await cluster.GetGrain<IUserGrain>(user).SyncAsync(identity.Id), except: null);
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    GatewayLog.LeaseRenewFailed(logger, TopicName.Personal(user), ex);
                }
            });
    }

    /// <summary>Applies the grain's list to the user's connections here (all but <paramref name="except"/>, which takes
    /// the returned list whole) unless this gateway already applied a newer version. Returns the list as applied.</summary>
    private string[] Reconcile(string userId, UserSubscriptions answer, PushConnection? except)
    {
        List<(string Topic, bool Subscribed)> changes = [];
        PushConnection[] connections;
        string[] topics;
        lock (_byUser)
        {
            if (!_byUser.TryGetValue(userId, out var entry))
            {
                return answer.Topics;
            }

            entry.RevokedBefore = Math.Max(entry.RevokedBefore, answer.RevokedBefore);
            entry.Synced = true;
            if (answer.Version == 0 || answer.Version >= entry.Version)
            {
                var wanted = answer.Topics.ToHashSet(StringComparer.Ordinal);
                changes.AddRange(entry.Topics.Where(t => !wanted.Contains(t)).Select(t => (t, false)));
                changes.AddRange(wanted.Where(t => !entry.Topics.Contains(t)).Select(t => (t, true)));
                entry.Topics.Clear();
                entry.Topics.UnionWith(wanted);
                entry.Version = answer.Version;
            }

            topics = [.. entry.Topics];
            connections = [.. entry.Connections.Where(c => c != except)];
        }

        foreach (var (topic, subscribed) in changes)
        {
            if (connections.Length > 0)
            {
                GatewayLog.UserSubscriptionReconciled(logger, userId, topic, subscribed);
            }

            foreach (var connection in connections)
            {
                SubscriptionChanged?.Invoke(connection, topic, subscribed);
            }
        }

        return topics;
    }

    private sealed class UserEntry
    {
        public HashSet<PushConnection> Connections { get; } = [];

        /// <summary>The user's server-side subscriptions as this gateway last applied them.</summary>
        public HashSet<string> Topics { get; } = new(StringComparer.Ordinal);

        public long Version { get; set; }

        /// <summary>The user's revocation second (see <see cref="UserSubscriptions.RevokedBefore"/>), once
        /// <see cref="Synced"/>.</summary>
        public long RevokedBefore { get; set; }

        /// <summary>The grain has answered for this entry (a local-only entry has not).</summary>
        public bool Synced { get; set; }
    }
}

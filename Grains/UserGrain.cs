using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using OrleansPush.Grains.Webhooks;
using OrleansPush.Hosting.Webhooks;

namespace OrleansPush.Grains;

/// <inheritdoc cref="IUserGrain"/>
public sealed class UserGrain : Grain, IUserGrain
{
    private readonly ILogger<UserGrain> _logger;
    private readonly TimeProvider _time;
    private readonly RoutingOptions _routing;
    private readonly IPersistentState<UserState> _state;
    private readonly Action<string, Exception> _onRouteFailure;
    private readonly Dictionary<string, int> _connections = new(StringComparer.Ordinal);
    private string _userId = string.Empty;
    private GatewayRoutes _routes = null!;
    private readonly WebhookEvents _webhooks;
    private LeaseOccupancy _occupancy = null!;

    public UserGrain(
        [PersistentState("user", PushNames.StateStore)] IPersistentState<UserState> state,
        ILogger<UserGrain> logger,
        IOptions<RoutingOptions> routing,
        TimeProvider time,
        WebhookEvents webhooks)
    {
        _webhooks = webhooks;
        _state = state;
        _logger = logger;
        _routing = routing.Value;
        _time = time;
        _onRouteFailure = (gateway, ex) => GrainsLog.RouteFailed(_logger, TopicName.Personal(_userId), gateway, ex);
    }

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        _userId = this.GetPrimaryKeyString();
        _routes = new GatewayRoutes(this.GetStreamProvider(PushNames.StreamProvider), _time, _routing.Lease);
        _occupancy = new LeaseOccupancy(_routes, _webhooks, WebhookEventTypes.UserConnected, WebhookEventTypes.UserDisconnected, null, _userId, _routing.Lease);
        return Task.CompletedTask;
    }

    public async Task<string[]> AttachAsync(string gatewayId) => (await SyncAsync(gatewayId)).Topics;

    public async Task<UserSubscriptions> SyncAsync(string gatewayId)
    {
        EnsureValid();
        _routes.Renew(gatewayId);
        await _occupancy.ChangedAsync(this);
        return new UserSubscriptions([.. _state.State.Subscriptions], _state.State.Version) { RevokedBefore = _state.State.RevokedBefore };
    }

    public Task DetachAsync(string gatewayId)
    {
        _routes.Remove(gatewayId);
        return _occupancy.ChangedAsync(this);
    }

    public Task<TopicPosition> PushAsync(byte[] data, string? idempotencyKey)
    {
        EnsureValid();
        return GrainFactory.GetGrain<ITopicGrain>(TopicName.Personal(_userId)).PublishAsync(data, idempotencyKey);
    }

    public async Task<bool> SubscribeAsync(string topic)
    {
        EnsureValid();
        if (!TopicName.IsValid(topic))
        {
            throw new PushRejectedException(WireCodes.BadTopic, "A topic is 1-200 characters of A-Z a-z 0-9 _ - . : / @.");
        }

        if (_state.State.Subscriptions.Contains(topic))
        {
            return false;
        }

        await ChangeAsync(topic, subscribed: true);
        return true;
    }

    public async Task<bool> UnsubscribeAsync(string topic)
    {
        EnsureValid();
        if (!_state.State.Subscriptions.Contains(topic))
        {
            return false;
        }

        await ChangeAsync(topic, subscribed: false);
        return true;
    }

    /// <summary>Stores the change, then tells the attached gateways. When storing fails the list and its version are
    /// put back (and read again when storage says it changed since it was read: a write that landed although it
    /// failed), so memory never runs ahead of storage and a retry really writes and tells.</summary>
    private async Task ChangeAsync(string topic, bool subscribed)
    {
        var state = _state.State;
        var previousVersion = state.Version;
        Apply(state, topic, subscribed);
        state.Version = Math.Max(previousVersion + 1, _time.GetUtcNow().ToUnixTimeMilliseconds());
        try
        {
            await _state.WriteStateAsync();
        }
        catch (Exception ex)
        {
            Apply(state, topic, !subscribed);
            state.Version = previousVersion;
            GrainsLog.UserStateWriteFailed(_logger, _userId, ex);
            if (ex is Orleans.Storage.InconsistentStateException)
            {
                await _state.ReadStateAsync();
            }

            throw;
        }

        await _routes.SendAsync(new UserSubscriptionChanged(_userId, topic, subscribed, state.Version), _onRouteFailure);
    }

    private static void Apply(UserState state, string topic, bool subscribed)
    {
        if (subscribed)
        {
            state.Subscriptions.Add(topic);
        }
        else
        {
            state.Subscriptions.Remove(topic);
        }
    }

    public Task<string[]> GetSubscriptionsAsync() => Task.FromResult(_state.State.Subscriptions.ToArray());

    public Task DisconnectAsync()
    {
        EnsureValid();
        return _routes.SendAsync(new UserDisconnectRequested(_userId), _onRouteFailure);
    }

    public async Task<long> RevokeAsync()
    {
        EnsureValid();
        var state = _state.State;
        var previous = state.RevokedBefore;
        state.RevokedBefore = Math.Max(previous, _time.GetUtcNow().ToUnixTimeSeconds());
        try
        {
            await _state.WriteStateAsync();
        }
        catch (Exception ex)
        {
            state.RevokedBefore = previous;
            GrainsLog.UserStateWriteFailed(_logger, _userId, ex);
            if (ex is Orleans.Storage.InconsistentStateException)
            {
                await _state.ReadStateAsync();
            }

            throw;
        }

        await _routes.SendAsync(new UserTokensRevoked(_userId, state.RevokedBefore), _onRouteFailure);
        return state.RevokedBefore;
    }

    public Task<long> GetRevokedBeforeAsync() => Task.FromResult(_state.State.RevokedBefore);

    public Task<bool> TryConnectAsync(string gatewayId, int connectionsHere, int limit)
    {
        EnsureValid();
        _routes.Renew(gatewayId);
        var elsewhere = 0;
        foreach (var (gateway, count) in _connections)
        {
            // A gateway whose lease lapsed (it died or let the user go) holds nothing any more.
            if (gateway != gatewayId && _routes.IsLive(gateway))
            {
                elsewhere += count;
            }
        }

        if (elsewhere + connectionsHere > limit)
        {
            return Task.FromResult(false);
        }

        _connections[gatewayId] = connectionsHere;
        return Task.FromResult(true);
    }

    public Task ReportConnectionsAsync(string gatewayId, int connectionsHere)
    {
        if (connectionsHere > 0)
        {
            _connections[gatewayId] = connectionsHere;
        }
        else
        {
            _connections.Remove(gatewayId);
        }

        return Task.CompletedTask;
    }

    private void EnsureValid()
    {
        if (!TopicName.IsValidUserId(_userId))
        {
            throw new PushRejectedException(WireCodes.BadRequest, "A user id is 1-195 characters of A-Z a-z 0-9 _ - . / @.");
        }
    }
}

/// <summary>What a user grain keeps durably. Frozen: never reorder or reuse ids.</summary>
[GenerateSerializer, Alias("OrleansPush.UserState")]
public sealed class UserState
{
    /// <summary>Topics a backend subscribed the user to.</summary>
    [Id(0)]
    public HashSet<string> Subscriptions { get; set; } = new(StringComparer.Ordinal);

    /// <summary>The version of <see cref="Subscriptions"/> (see <see cref="UserSubscriptions.Version"/>).</summary>
    [Id(1)]
    public long Version { get; set; }

    /// <summary>The user's tokens issued (<c>iat</c>, Unix seconds) at or before this are revoked; 0 when none is.</summary>
    [Id(2)]
    public long RevokedBefore { get; set; }
}

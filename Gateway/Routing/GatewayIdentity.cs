namespace OrleansPush.Gateway.Routing;

/// <summary>This gateway process's id: the key of its own stream and of its interest leases. New on every start,
/// so a restarted gateway never inherits a dead one's stream subscription.</summary>
public sealed class GatewayIdentity
{
    public string Id { get; } = "gw-" + Guid.NewGuid().ToString("N");
}

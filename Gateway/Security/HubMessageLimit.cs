using Microsoft.AspNetCore.SignalR;
using OrleansPush.Gateway.Transports.SignalR;

namespace OrleansPush.Gateway.Security;

/// <summary>The messages-per-second limit for SignalR: every hub invocation takes one message from the connection's
/// bucket; past it the invocation fails with <c>rate_limited: ...</c> and the connection stays open.</summary>
public sealed class HubMessageLimit(SignalRConnections connections, ConnectionSecurity security) : IHubFilter
{
    public async ValueTask<object?> InvokeMethodAsync(HubInvocationContext invocationContext, Func<HubInvocationContext, ValueTask<object?>> next)
    {
        if (connections.Find(invocationContext.Context.ConnectionId) is { } connection && !security.TryAcceptMessage(connection))
        {
            throw new HubException("rate_limited: Too many invocations per second; slow down and retry.");
        }

        return await next(invocationContext);
    }
}

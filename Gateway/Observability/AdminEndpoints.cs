using OrleansPush.Gateway.Hosting;
using OrleansPush.Gateway.Routing;
using OrleansPush.Gateway.Security;

namespace OrleansPush.Gateway.Observability;

/// <summary>
/// The operator API under <c>/api/admin</c>: this gateway's connections, a topic's state in the cluster,
/// disconnecting a user everywhere, and revoking a user's tokens everywhere. With tokens required every call needs the <c>admin</c> claim
/// (<see cref="AdminAccess"/>); in open mode it is allowed, like the rest of the API. Every call is audited.
/// </summary>
public static class AdminEndpoints
{
    public static WebApplication MapAdminApi(this WebApplication app)
    {
        var admin = app.MapGroup("/api/admin").AddEndpointFilter<AdminAccess>();

        // This gateway only: counts by transport and the users with at least one connection here.
        admin.MapGet("/connections", (ConnectionDrain drain, GatewayIdentity gateway) =>
        {
            var open = drain.Connections;
            return Results.Ok(new ConnectionsAnswer(
                gateway.Id,
                open.Count,
                open.GroupBy(c => c.Transport, StringComparer.Ordinal).OrderBy(g => g.Key, StringComparer.Ordinal)
                    .ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal),
                [.. open.Where(c => c.UserId is not null).GroupBy(c => c.UserId!, StringComparer.Ordinal)
                    .OrderBy(g => g.Key, StringComparer.Ordinal).Select(g => new UserConnectionsAnswer(g.Key, g.Count()))]));
        });

        admin.MapGet("/topics/{topic}", async (string topic, IClusterClient cluster, Microsoft.Extensions.Options.IOptions<TopicOptions> topics) =>
        {
            if (!TopicName.IsValid(topic))
            {
                return Problems.Result(new PushRejectedException(WireCodes.BadTopic, "A topic is 1-200 characters of A-Z a-z 0-9 _ - . : / @."));
            }

            var grain = cluster.GetGrain<ITopicGrain>(topic);
            var position = await grain.GetPositionAsync();
            var gateways = await grain.GetGatewaysAsync();
            var presence = topics.Value.For(topic).Presence ? await grain.GetPresenceAsync() : null;
            return Results.Ok(new TopicAnswer(topic, position, gateways, presence));
        });

        // Local connections close at once; the user grain tells every other gateway the user is attached to.
        admin.MapPost("/users/{userId}/disconnect", async (string userId, UserConnections users, IClusterClient cluster) =>
        {
            if (!TopicName.IsValidUserId(userId))
            {
                return Problems.Result(new PushRejectedException(WireCodes.BadRequest, "A user id is 1-195 characters of A-Z a-z 0-9 _ - . / @ (no ':')."));
            }

            var local = users.ConnectionsOf(userId);
            foreach (var connection in local)
            {
                connection.Close(WireCodes.Disconnected);
            }

            await cluster.GetGrain<IUserGrain>(userId).DisconnectAsync();
            return Results.Ok(new DisconnectAnswer(userId, local.Length));
        });

        // Stored in the user's grain first (durable), which tells every other gateway the user is attached to; then the
        // connections here whose token it covers close at once.
        admin.MapPost("/users/{userId}/revoke", async (string userId, TokenRevocations revocations, IClusterClient cluster) =>
        {
            if (!TopicName.IsValidUserId(userId))
            {
                return Problems.Result(new PushRejectedException(WireCodes.BadRequest, "A user id is 1-195 characters of A-Z a-z 0-9 _ - . / @ (no ':')."));
            }

            var revokedBefore = await cluster.GetGrain<IUserGrain>(userId).RevokeAsync();
            var closed = revocations.Apply(userId, revokedBefore);
            return Results.Ok(new RevokeAnswer(userId, DateTimeOffset.FromUnixTimeSeconds(revokedBefore), closed));
        });
        return app;
    }

    /// <summary>Tokens of <see cref="UserId"/> issued at or before <see cref="RevokedBefore"/> (to the second) are
    /// refused; <see cref="ClosedHere"/> connections were closed on this gateway.</summary>
    public sealed record RevokeAnswer(string UserId, DateTimeOffset RevokedBefore, int ClosedHere);

    public sealed record ConnectionsAnswer(string Gateway, int Count, Dictionary<string, int> ByTransport, UserConnectionsAnswer[] Users);

    public sealed record UserConnectionsAnswer(string UserId, int Connections);

    public sealed record TopicAnswer(string Topic, TopicPosition Position, string[] Gateways, TopicPresence? Presence);

    public sealed record DisconnectAnswer(string UserId, int ClosedHere);
}

/// <summary>The admin API's gate: with tokens required, no valid token is 401 <c>unauthorized</c> and a token without
/// the <c>admin</c> claim 403 <c>forbidden</c>; both are audited. Every call let through is audited as an admin action
/// (who, method and path, from where), in open mode too.</summary>
public sealed class AdminAccess(ConnectionSecurity security) : IEndpointFilter
{
    public async ValueTask<object?> InvokeAsync(EndpointFilterInvocationContext context, EndpointFilterDelegate next)
    {
        var http = context.HttpContext;
        var remote = http.Connection.RemoteIpAddress?.ToString();
        var action = http.Request.Method;
        var target = http.Request.Path.Value ?? string.Empty;
        string? user = null;
        if (security.Secured)
        {
            if (http.User.Identity?.IsAuthenticated != true)
            {
                var reason = http.Items.TryGetValue(TokenKeys.FailureItem, out var failure) ? (string)failure! : "missing";
                security.Audit.TokenRefused(reason, "admin", remote);
                return Results.Json(new Problems.ErrorBody(WireCodes.Unauthorized, "A token with the admin claim is required (Authorization: Bearer)."),
                    statusCode: StatusCodes.Status401Unauthorized);
            }

            var access = ConnectionAccess.FromPrincipal(http.User);
            user = access.UserId;
            if (!access.Admin)
            {
                security.Audit.AdminForbidden(user, action, target, remote);
                return Results.Json(new Problems.ErrorBody(WireCodes.Forbidden, "The admin API needs the admin claim."), statusCode: StatusCodes.Status403Forbidden);
            }
        }

        security.Audit.AdminAction(user, action, target, remote);
        return await next(context);
    }
}

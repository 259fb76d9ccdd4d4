using OrleansPush.Gateway.Hosting;

namespace OrleansPush.Gateway.Security;

/// <summary>
/// Authorization of the backend API (<c>/api/...</c>), as an endpoint filter on the whole group. With tokens required:
/// no valid token is 401 <c>unauthorized</c>; publishing to a topic needs a <c>publish</c> pattern that matches it (a
/// push to a user matches <c>user:{id}</c>); reading a topic needs a publish or subscribe pattern for it; managing a
/// user's server-side subscriptions, and any endpoint this filter does not know, needs the <c>admin</c> claim. Refusals
/// are 403 <c>forbidden</c>. Every refusal, and every admin action (also in open mode), is audited. The token comes in
/// the <c>Authorization</c> header only.
/// </summary>
public sealed class ApiAccess(ConnectionSecurity security) : IEndpointFilter
{
    public async ValueTask<object?> InvokeAsync(EndpointFilterInvocationContext context, EndpointFilterDelegate next)
    {
        var http = context.HttpContext;
        var remote = http.Connection.RemoteIpAddress?.ToString();
        var audit = security.Audit;
        var access = ConnectionAccess.None;
        if (security.Secured)
        {
            if (http.User.Identity?.IsAuthenticated != true)
            {
                var reason = http.Items.TryGetValue(TokenKeys.FailureItem, out var failure) ? (string)failure! : "missing";
                audit.TokenRefused(reason, "api", remote);
                return Results.Json(new Problems.ErrorBody(WireCodes.Unauthorized,
                    reason == "missing" ? "A token is required (Authorization: Bearer)." : $"The token was refused ({reason})."), statusCode: StatusCodes.Status401Unauthorized);
            }

            access = ConnectionAccess.FromPrincipal(http.User);
        }

        var values = http.Request.RouteValues;
        var topic = values.TryGetValue("topic", out var t) ? t as string : null;
        var userId = values.TryGetValue("userId", out var u) ? u as string : null;
        var method = http.Request.Method;
        var path = http.Request.Path.Value ?? string.Empty;

        if (userId is not null && path.Contains("/subscriptions", StringComparison.Ordinal))
        {
            var action = method + " subscriptions";
            var target = userId + (topic is null ? string.Empty : " " + topic);
            if (security.Secured && !access.Admin)
            {
                audit.AdminForbidden(access.UserId, action, target, remote);
                return Forbidden("Managing a user's subscriptions needs the admin claim.");
            }

            if (!HttpMethods.IsGet(method))
            {
                audit.AdminAction(access.UserId, action, target, remote);
            }

            return await next(context);
        }

        if (!security.Secured)
        {
            return await next(context);
        }

        if (HttpMethods.IsPost(method) && topic is not null)
        {
            return access.MayPublish(topic) ? await next(context) : PublishForbidden(access, topic, remote);
        }

        if (HttpMethods.IsPost(method) && userId is not null)
        {
            var personal = TopicName.Personal(userId);
            return access.MayPublish(personal) ? await next(context) : PublishForbidden(access, personal, remote);
        }

        if (HttpMethods.IsGet(method) && topic is not null)
        {
            var read = topic.EndsWith("/presence", StringComparison.Ordinal) ? topic[..^"/presence".Length] : topic;
            if (access.Admin || access.MayPublish(read) || access.MaySubscribe(read))
            {
                return await next(context);
            }

            audit.AdminForbidden(access.UserId, "GET topic", read, remote);
            return Forbidden("The token grants neither publishing nor subscribing to this topic.");
        }

        if (HttpMethods.IsPost(method) && path.EndsWith("/publish", StringComparison.Ordinal))
        {
            // A batch: each item's topic is checked by CheckBatch once the body is read.
            return access.Publish.Count > 0 ? await next(context) : PublishForbidden(access, "(batch)", remote);
        }

        if (access.Admin)
        {
            audit.AdminAction(access.UserId, method, path, remote);
            return await next(context);
        }

        audit.AdminForbidden(access.UserId, method, path, remote);
        return Forbidden("This action needs the admin claim.");
    }

    /// <summary>For a batch: a 403 result naming the first topic the caller may not publish to, or null when every
    /// topic is allowed (always null in open mode).</summary>
    public static IResult? CheckBatch(HttpContext http, IEnumerable<string> topics)
    {
        var security = http.RequestServices.GetRequiredService<ConnectionSecurity>();
        if (!security.Secured)
        {
            return null;
        }

        var access = ConnectionAccess.FromPrincipal(http.User);
        foreach (var topic in topics)
        {
            // An invalid name is answered bad_topic by the batch itself.
            if (TopicName.IsValid(topic) && !access.MayPublish(topic))
            {
                security.Audit.PublishForbidden(access.UserId, topic, "api", http.Connection.RemoteIpAddress?.ToString());
                return Forbidden($"The token does not grant publishing to {topic}; nothing in the batch was published.");
            }
        }

        return null;
    }

    private IResult PublishForbidden(ConnectionAccess access, string topic, string? remote)
    {
        security.Audit.PublishForbidden(access.UserId, topic, "api", remote);
        return Forbidden("The token does not grant publishing to this topic.");
    }

    private static IResult Forbidden(string message) =>
        Results.Json(new Problems.ErrorBody(WireCodes.Forbidden, message), statusCode: StatusCodes.Status403Forbidden);
}

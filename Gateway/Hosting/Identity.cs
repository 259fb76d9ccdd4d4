using Microsoft.Extensions.Options;
using OrleansPush.Gateway.Security;

namespace OrleansPush.Gateway.Hosting;

/// <summary>Who a connection belongs to. With tokens required (a key configured) it is the token's <c>sub</c>, read
/// from the request the <see cref="ConnectionGate"/> has authenticated; only in open mode may a connection name its user
/// with <c>?user=</c> (development only, see README).</summary>
public sealed class Identity(IOptions<GatewayOptions> options, IOptions<AuthOptions> auth)
{
    public bool TryGetUser(HttpContext context, out string? userId, out string problem)
    {
        problem = string.Empty;
        userId = null;
        if (ProxyAdmitted(context) is { } proxied)
        {
            userId = proxied.UserId;
            return true;
        }

        if (auth.Value.Secured)
        {
            var subject = context.User.Identity?.IsAuthenticated == true ? ConnectionAccess.FromPrincipal(context.User).UserId : null;
            if (subject is not null && !TopicName.IsValidUserId(subject))
            {
                problem = "The token's sub is not a valid user id: 1-195 characters of A-Z a-z 0-9 _ - . / @ (no ':').";
                return false;
            }

            userId = subject;
            return true;
        }

        if (!options.Value.AllowUserQueryParameter || !context.Request.Query.TryGetValue("user", out var values))
        {
            return true;
        }

        var user = values.ToString();
        if (!TopicName.IsValidUserId(user))
        {
            problem = "A user id is 1-195 characters of A-Z a-z 0-9 _ - . / @ (no ':').";
            return false;
        }

        userId = user;
        return true;
    }

    /// <summary>What the request's token grants (<see cref="ConnectionAccess.None"/> in open mode or without one).
    /// Transports give it to each connection they open.</summary>
    public ConnectionAccess AccessOf(HttpContext context) =>
        ProxyAdmitted(context) is { } proxied ? proxied
        : auth.Value.Secured && context.User.Identity?.IsAuthenticated == true ? ConnectionAccess.FromPrincipal(context.User) : ConnectionAccess.None;

    /// <summary>What the backend's connect proxy granted this request at the door (null when a token or nothing did).</summary>
    private static ConnectionAccess? ProxyAdmitted(HttpContext context) =>
        context.Items.TryGetValue(ConnectionGate.AdmittedItem, out var item) && item is Connections.Admitted { Access.FromConnectProxy: true } admitted
            ? admitted.Access
            : null;
}

/// <summary>Error answers of the HTTP endpoints: <c>{"error":code,"message":...}</c>, never a stack trace.</summary>
public static class Problems
{
    public static Task WriteAsync(HttpContext context, int status, string code, string message)
    {
        context.Response.StatusCode = status;
        return context.Response.WriteAsJsonAsync(new ErrorBody(code, message));
    }

    public static IResult Result(PushRejectedException rejected) =>
        Results.Json(new ErrorBody(rejected.Code, rejected.Message), statusCode: StatusOf(rejected.Code));

    public static int StatusOf(string code) => code switch
    {
        WireCodes.TooLarge => StatusCodes.Status413PayloadTooLarge,
        WireCodes.Unauthorized => StatusCodes.Status401Unauthorized,
        WireCodes.Forbidden => StatusCodes.Status403Forbidden,
        WireCodes.RateLimited => StatusCodes.Status429TooManyRequests,
        WireCodes.Unavailable => StatusCodes.Status503ServiceUnavailable,
        _ => StatusCodes.Status400BadRequest,
    };

    public sealed record ErrorBody(string Error, string Message);
}

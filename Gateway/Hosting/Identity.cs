using Microsoft.Extensions.Options;

namespace OrleansPush.Gateway.Hosting;

/// <summary>Who a connection belongs to. Until tokens land, a connection may name its user with <c>?user=</c>
/// (development only, see README).</summary>
public sealed class Identity(IOptions<GatewayOptions> options)
{
    public bool TryGetUser(HttpContext context, out string? userId, out string problem)
    {
        problem = string.Empty;
        userId = null;
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
        "too_large" => StatusCodes.Status413PayloadTooLarge,
        "unauthorized" => StatusCodes.Status401Unauthorized,
        "forbidden" => StatusCodes.Status403Forbidden,
        "rate_limited" => StatusCodes.Status429TooManyRequests,
        "unavailable" => StatusCodes.Status503ServiceUnavailable,
        _ => StatusCodes.Status400BadRequest,
    };

    public sealed record ErrorBody(string Error, string Message);
}

using System.Net.Http.Headers;
using System.Security.Claims;
using System.Security.Cryptography;
using System.Text;
using System.Text.Encodings.Web;
using Microsoft.AspNetCore.Authentication;
using Microsoft.Extensions.Options;

namespace OrleansPush.Silo;

/// <summary>HTTP Basic against the one user name and password of <see cref="SiloDashboardOptions"/>. A request
/// without credentials or with wrong ones is challenged with 401 and <c>WWW-Authenticate: Basic</c>, so that a browser
/// asks for them. Basic sends the password with every request: put TLS in front of the port beyond the pod network.</summary>
internal sealed class BasicAuthenticationHandler(
    IOptionsMonitor<AuthenticationSchemeOptions> options,
    ILoggerFactory logger,
    UrlEncoder encoder,
    IOptions<SiloDashboardOptions> dashboard) : AuthenticationHandler<AuthenticationSchemeOptions>(options, logger, encoder)
{
    public const string SchemeName = "Basic";

    protected override Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        if (!AuthenticationHeaderValue.TryParse(Request.Headers.Authorization.ToString(), out var header)
            || !string.Equals(header.Scheme, SchemeName, StringComparison.OrdinalIgnoreCase))
        {
            return Task.FromResult(AuthenticateResult.NoResult());
        }

        if (!TryDecode(header.Parameter, out var username, out var password) || !Matches(username, password))
        {
            return Task.FromResult(AuthenticateResult.Fail("Wrong dashboard user name or password."));
        }

        var identity = new ClaimsIdentity([new Claim(ClaimTypes.Name, username)], SchemeName);
        return Task.FromResult(AuthenticateResult.Success(new AuthenticationTicket(new ClaimsPrincipal(identity), SchemeName)));
    }

    protected override Task HandleChallengeAsync(AuthenticationProperties properties)
    {
        Response.StatusCode = StatusCodes.Status401Unauthorized;
        Response.Headers.WWWAuthenticate = $"Basic realm=\"{SiloDashboardOptions.Realm}\"";
        return Task.CompletedTask;
    }

    private bool Matches(string username, string password)
    {
        var expected = dashboard.Value;
        // Both compared, always: neither which half was wrong nor how much of it matched shows in the timing.
        return FixedTimeEquals(username, expected.Username ?? "") & FixedTimeEquals(password, expected.Password ?? "");
    }

    /// <summary>Compares hashes rather than the strings so that a length difference takes no shortcut either.</summary>
    private static bool FixedTimeEquals(string given, string expected) =>
        CryptographicOperations.FixedTimeEquals(SHA256.HashData(Encoding.UTF8.GetBytes(given)), SHA256.HashData(Encoding.UTF8.GetBytes(expected)));

    private static bool TryDecode(string? parameter, out string username, out string password)
    {
        username = password = "";
        if (string.IsNullOrEmpty(parameter))
        {
            return false;
        }

        var bytes = new byte[(parameter.Length + 3) / 4 * 3];
        if (!Convert.TryFromBase64String(parameter, bytes, out var written))
        {
            return false;
        }

        var text = Encoding.UTF8.GetString(bytes, 0, written);
        var colon = text.IndexOf(':', StringComparison.Ordinal);
        if (colon < 0)
        {
            return false;
        }

        (username, password) = (text[..colon], text[(colon + 1)..]);
        return true;
    }
}

using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;

namespace OrleansPush.Silo.Tests;

/// <summary>The silo's dashboard, off unless configured and never served without credentials, checked on real silo
/// processes.</summary>
public sealed class DashboardTests
{
    private const string Username = "ops";
    private const string Password = "a-long-enough-secret";
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task DashboardAnswersOnlyTheConfiguredUserWhileHealthzIsOpen()
    {
        var port = RunningSilo.FreePort();
        await using var silo = RunningSilo.Start(new Dictionary<string, string?>
        {
            ["OrleansPush:Dashboard:Port"] = port.ToString(CultureInfo.InvariantCulture),
            ["OrleansPush:Dashboard:Username"] = Username,
            ["OrleansPush:Dashboard:Password"] = Password,
        });
        await silo.WaitForOutputAsync("Application started", StartTimeout);
        Assert.Contains($"Now listening on: http://127.0.0.1:{port}", silo.Output, StringComparison.Ordinal);

        using var http = new HttpClient(new HttpClientHandler { AllowAutoRedirect = false })
        {
            BaseAddress = new Uri($"http://127.0.0.1:{port}"),
            Timeout = TimeSpan.FromSeconds(10),
        };

        using (var anonymous = await http.GetAsync("/dashboard"))
        {
            AssertChallenged(anonymous);
        }

        using (var wrong = await http.SendAsync(Get("/dashboard/", Username, Password + "x")))
        {
            AssertChallenged(wrong);
        }

        using (var wrongUser = await http.SendAsync(Get("/dashboard/index.min.js", "admin", Password)))
        {
            AssertChallenged(wrongUser);
        }

        using (var page = await http.SendAsync(Get("/dashboard/", Username, Password)))
        {
            Assert.Equal(HttpStatusCode.OK, page.StatusCode);
            Assert.Equal("text/html", page.Content.Headers.ContentType?.MediaType);
            Assert.Contains("<title>Orleans Dashboard</title>", await page.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        // The page's API answers from the silo itself: this silo becomes the host it lists once the counters, sampled
        // every second, have been collected.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        string counters;
        do
        {
            await Task.Delay(250);
            using var response = await http.SendAsync(Get("/dashboard/DashboardCounters", Username, Password));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            counters = await response.Content.ReadAsStringAsync();
        }
        while (!counters.Contains($"\"proxyPort\":{silo.GatewayPort}", StringComparison.Ordinal) && DateTime.UtcNow < deadline);
        Assert.Contains($"\"proxyPort\":{silo.GatewayPort}", counters, StringComparison.Ordinal);

        using (var health = await http.GetAsync("/healthz"))
        {
            Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        }

        if (OperatingSystem.IsLinux())
        {
            Assert.Equal(new SortedSet<int> { silo.SiloPort, silo.GatewayPort, port }, silo.ListeningPorts());
        }
    }

    [Theory]
    [InlineData(Username, null, "OrleansPush:Dashboard:Password")]
    [InlineData(Username, "too-short", "OrleansPush:Dashboard:Password must be set to at least 12 characters")]
    [InlineData(null, Password, "OrleansPush:Dashboard:Username must be set")]
    public async Task DashboardPortWithoutUsableCredentialsStopsTheSiloWithAMessageNamingTheKey(string? username, string? password, string message)
    {
        await using var silo = RunningSilo.Start(new Dictionary<string, string?>
        {
            ["OrleansPush:Dashboard:Port"] = RunningSilo.FreePort().ToString(CultureInfo.InvariantCulture),
            ["OrleansPush:Dashboard:Username"] = username,
            ["OrleansPush:Dashboard:Password"] = password,
        });

        var exitCode = await silo.WaitForExitAsync(StartTimeout);

        Assert.NotEqual(0, exitCode);
        Assert.Contains(message, silo.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("Now listening on", silo.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task WithoutDashboardPortTheSiloStartsWithNoHttpServer()
    {
        await using var silo = RunningSilo.Start(new Dictionary<string, string?>
        {
            // Credentials alone do not turn the dashboard on.
            ["OrleansPush:Dashboard:Username"] = Username,
            ["OrleansPush:Dashboard:Password"] = Password,
        });

        await silo.WaitForOutputAsync("Application started", StartTimeout);

        Assert.DoesNotContain("Now listening on", silo.Output, StringComparison.Ordinal);
        if (OperatingSystem.IsLinux())
        {
            Assert.Equal(new SortedSet<int> { silo.SiloPort, silo.GatewayPort }, silo.ListeningPorts());
        }
    }

    private static HttpRequestMessage Get(string path, string username, string password)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{username}:{password}")));
        return request;
    }

    private static void AssertChallenged(HttpResponseMessage response)
    {
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        var challenge = Assert.Single(response.Headers.WwwAuthenticate);
        Assert.Equal("Basic realm=\"orleanspush-dashboard\"", challenge.ToString());
    }
}

using System.Net;

namespace OrleansPush.Gateway.Tests;

/// <summary>Kestrel reuses a connection's <c>HttpContext</c> for its next request: a closed SSE stream must not abort,
/// after its close grace, whatever request the same connection carries next.</summary>
public sealed class SseStaleContextTests
{
    [Fact]
    public async Task AClosedSseStreamLeavesTheNextRequestOnItsConnectionAlone()
    {
        await using var gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
        {
            ["OrleansPush:Gateway:SlowCloseGrace"] = "00:00:01",
            ["OrleansPush:LongPolling:Wait"] = "00:00:04",
        });
        var topic = GatewayFixture.NewTopic("stale");
        var user = "stale-" + Guid.NewGuid().ToString("N")[..8];

        // One connection for everything: the poll below runs on the connection (and context) the stream had.
        using var handler = new SocketsHttpHandler { MaxConnectionsPerServer = 1 };
        using var http = new HttpClient(handler) { BaseAddress = gateway.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        using (var stream = await http.GetAsync($"/sse?topic={topic}&user={user}", HttpCompletionOption.ResponseHeadersRead))
        {
            Assert.Equal(HttpStatusCode.OK, stream.StatusCode);
            await using var body = await stream.Content.ReadAsStreamAsync();
            using var reader = new StreamReader(body);

            // The operator closes the user's connections: the stream says bye and ends.
            using (var disconnect = await gateway.Http.PostAsync($"/api/admin/users/{user}/disconnect", null))
            {
                Assert.Equal(HttpStatusCode.OK, disconnect.StatusCode);
            }

            var text = await reader.ReadToEndAsync().WaitAsync(WsClient.DefaultWait);
            Assert.Contains("event: bye", text, StringComparison.Ordinal);
        }

        // A poll that waits longer than the stream's close grace, on the same connection: answered, not aborted.
        using var poll = await http.GetAsync($"/poll?topic={topic}");
        Assert.Equal(HttpStatusCode.OK, poll.StatusCode);
    }
}

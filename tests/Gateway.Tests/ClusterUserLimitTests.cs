using System.Net;

namespace OrleansPush.Gateway.Tests;

/// <summary><c>ConnectionsPerUser</c> holds across the cluster: the user's grain counts the user's connections over every
/// gateway.</summary>
public sealed class ClusterUserLimitTests
{
    private static readonly Dictionary<string, string?> LimitTwo = new() { ["OrleansPush:Limits:ConnectionsPerUser"] = "2" };

    [Fact]
    public async Task AUserAtTheLimitOnOneGatewayIsRefusedOnAnotherUntilAConnectionCloses()
    {
        await using var silo = await TestSilo.StartAsync();
        await using var a = await TestGateway.StartClientAsync(silo, LimitTwo);
        await using var b = await TestGateway.StartClientAsync(silo, LimitTwo);
        var user = "limit-" + Guid.NewGuid().ToString("N")[..8];

        var first = await WsClient.ConnectAsync(a.WebSocketUri("user=" + user));
        await using var second = await WsClient.ConnectAsync(a.WebSocketUri("user=" + user));

        // On B, over WebSocket and SSE alike: the user already holds two connections in the cluster.
        Assert.Equal(HttpStatusCode.TooManyRequests, await StatusAsync(b, "user=" + user));
        using (var sse = await b.Http.GetAsync($"/sse?user={user}", HttpCompletionOption.ResponseHeadersRead))
        {
            Assert.Equal(HttpStatusCode.TooManyRequests, sse.StatusCode);
        }

        // Another user is not affected.
        Assert.Equal(HttpStatusCode.SwitchingProtocols, await StatusAsync(b, "user=" + user + "-other"));

        // One closes on A: B admits the user again (once A has reported the close).
        await first.DisposeAsync();
        var deadline = DateTime.UtcNow + WsClient.DefaultWait;
        HttpStatusCode status;
        while ((status = await StatusAsync(b, "user=" + user)) != HttpStatusCode.SwitchingProtocols && DateTime.UtcNow < deadline)
        {
            await Task.Delay(100);
        }

        Assert.Equal(HttpStatusCode.SwitchingProtocols, status);
    }

    /// <summary>Opens a raw-protocol socket and closes it again; the handshake's HTTP status.</summary>
    private static async Task<HttpStatusCode> StatusAsync(TestGateway gateway, string query)
    {
        using var socket = new System.Net.WebSockets.ClientWebSocket();
        socket.Options.AddSubProtocol("orleanspush.v1.json");
        socket.Options.CollectHttpResponseDetails = true;
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        try
        {
            await socket.ConnectAsync(gateway.WebSocketUri(query), cts.Token);
            await socket.CloseAsync(System.Net.WebSockets.WebSocketCloseStatus.NormalClosure, null, cts.Token);
        }
        catch (System.Net.WebSockets.WebSocketException)
        {
        }

        return socket.HttpStatusCode;
    }
}

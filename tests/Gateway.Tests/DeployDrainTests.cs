using System.Net;
using System.Net.WebSockets;
using System.Text.Json;
using Microsoft.AspNetCore.SignalR.Client;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using OrleansPush.Gateway.Hosting;

namespace OrleansPush.Gateway.Tests;

/// <summary>A gateway that stops drains: not ready, no new connections, <c>bye</c> to everyone, within its deadline.</summary>
public sealed class DeployDrainTests
{
    [Fact]
    public async Task ReadyGatewayAnswersReadyzWith200()
    {
        await using var gateway = await TestGateway.StartEmbeddedAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        using var response = await gateway.Http.GetAsync("/readyz", cts.Token);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Contains("ready", await response.Content.ReadAsStringAsync(cts.Token), StringComparison.Ordinal);
    }

    [Fact]
    public async Task DrainingGatewayTurnsNotReadyRefusesNewClientsAndSaysByeOnEveryTransport()
    {
        await using var gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
        {
            ["OrleansPush:Gateway:DrainDelay"] = "00:00:01.500",
            ["OrleansPush:Gateway:DrainTimeout"] = "00:00:10",
            ["OrleansPush:Gateway:DrainBatchSize"] = "1",
        });
        var topic = "drain-" + Guid.NewGuid().ToString("N");
        await using var ws = await WsClient.ConnectAsync(gateway.WebSocketUri());
        Assert.Equal("ok", (await ws.SubscribeAsync(topic)).Op);

        var hubBye = new TaskCompletionSource<JsonElement>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var hub = new HubConnectionBuilder().WithUrl(new Uri(gateway.BaseAddress, "/hubs/push")).Build();
        hub.On<JsonElement>("bye", bye => hubBye.TrySetResult(bye.Clone()));
        using (var start = new CancellationTokenSource(WsClient.DefaultWait))
        {
            await hub.StartAsync(start.Token);
        }

        var drain = gateway.Services.GetRequiredService<ConnectionDrain>();
        await WaitUntilAsync(() => drain.OpenConnections == 2, TimeSpan.FromSeconds(5));

        // What SIGTERM does: the host's stopping callbacks run, ours first, and hold the stop until the drain ends.
        var lifetime = gateway.Services.GetRequiredService<IHostApplicationLifetime>();
        var stopping = Task.Run(lifetime.StopApplication);

        await WaitUntilAsync(() => drain.IsDraining, TimeSpan.FromSeconds(5));
        using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5)))
        using (var readyz = await gateway.Http.GetAsync("/readyz", cts.Token))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, readyz.StatusCode);
            Assert.Contains("draining", await readyz.Content.ReadAsStringAsync(cts.Token), StringComparison.Ordinal);
        }

        using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5)))
        using (var liveness = await gateway.Http.GetAsync("/healthz", cts.Token))
        {
            Assert.Equal(HttpStatusCode.OK, liveness.StatusCode);
        }

        await Assert.ThrowsAsync<WebSocketException>(() => WsClient.ConnectAsync(gateway.WebSocketUri()));

        var frames = await ws.ReadToEndAsync(TimeSpan.FromSeconds(10));
        var bye = Assert.Single(frames, f => f.Op == "bye");
        Assert.Equal("shutdown", bye.Code);
        Assert.True(bye.Json.GetProperty("reconnect").GetBoolean());
        Assert.Equal(WebSocketCloseStatus.EndpointUnavailable, ws.CloseStatus);

        var hubGoodbye = await hubBye.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal("shutdown", hubGoodbye.GetProperty("code").GetString());
        Assert.True(hubGoodbye.GetProperty("reconnect").GetBoolean());

        await stopping.WaitAsync(TimeSpan.FromSeconds(15));
        Assert.Equal(0, drain.OpenConnections);
    }

    private static async Task WaitUntilAsync(Func<bool> condition, TimeSpan wait)
    {
        var deadline = DateTime.UtcNow + wait;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "the condition did not hold in time");
            await Task.Delay(20);
        }
    }
}

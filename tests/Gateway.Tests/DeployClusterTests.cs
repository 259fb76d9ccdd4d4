using System.Net;
using Microsoft.Extensions.DependencyInjection;

namespace OrleansPush.Gateway.Tests;

/// <summary>Silos and gateways as separate processes that find each other through a membership table alone (Redis, or
/// PostgreSQL through ADO.NET clustering and the project's own schema).</summary>
public sealed class DeployClusterTests
{
    [Theory]
    [InlineData("Redis", "ORLEANSPUSH_TEST_REDIS")]
    [InlineData("Postgres", "ORLEANSPUSH_TEST_POSTGRES")]
    public async Task TwoSiloProcessesAndTwoGatewaysOnAMembershipTablePassMessagesEndToEnd(string provider, string variable)
    {
        var prefix = "cl" + Guid.NewGuid().ToString("N")[..8];
        var connection = Environment.GetEnvironmentVariable(variable)
            ?? throw new InvalidOperationException($"{variable} is not set: run the tests with ./test.sh.");

        // Clustering and storage on the same server; the clustering connection string falls back to the storage's.
        var settings = new Dictionary<string, string?>
        {
            ["OrleansPush:Cluster:Clustering"] = provider,
            ["OrleansPush:Cluster:ServiceId"] = prefix,
            ["OrleansPush:Cluster:ClusterId"] = prefix,
            ["OrleansPush:Cluster:AdvertisedIP"] = "127.0.0.1",
            ["OrleansPush:Storage:Provider"] = provider,
            [$"OrleansPush:Storage:{provider}"] = connection,
            ["OrleansPush:Storage:Prefix"] = prefix,
        };

        // No primary silo and no list of gateway ports: each silo registers in the table and the gateways read it there.
        await using var first = SiloProcess.Start(null, TestGateway.Merge(settings, new Dictionary<string, string?> { ["OrleansPush:Cluster:SiloName"] = "first" }));
        await using var second = SiloProcess.Start(null, TestGateway.Merge(settings, new Dictionary<string, string?> { ["OrleansPush:Cluster:SiloName"] = "second" }));
        var gatewaySettings = TestGateway.Merge(settings, new Dictionary<string, string?> { ["OrleansPush:Cluster:Mode"] = "Cluster" });
        await using var publisherGateway = await TestGateway.StartWhenClusterIsUpAsync(gatewaySettings);
        await using var subscriberGateway = await TestGateway.StartWhenClusterIsUpAsync(gatewaySettings);

        var management = subscriberGateway.Services.GetRequiredService<IClusterClient>().GetGrain<IManagementGrain>(0);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while ((await management.GetHosts(onlyActive: true).WaitAsync(TimeSpan.FromSeconds(10))).Count < 2)
        {
            Assert.True(DateTime.UtcNow < deadline, "the second silo did not join within 60 s");
            await Task.Delay(500);
        }

        foreach (var gateway in new[] { publisherGateway, subscriberGateway })
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(15));
            using var readyz = await gateway.Http.GetAsync("/readyz", cts.Token);
            Assert.Equal(HttpStatusCode.OK, readyz.StatusCode);
        }

        // Enough topics that their grains land on both silos.
        var topics = Enumerable.Range(0, 12).Select(i => $"{prefix}-t{i}").ToArray();
        await using var subscriber = await WsClient.ConnectAsync(subscriberGateway.WebSocketUri());
        foreach (var topic in topics)
        {
            Assert.Equal("ok", (await subscriber.SubscribeAsync(topic)).Op);
        }

        for (var round = 1; round <= 3; round++)
        {
            foreach (var topic in topics)
            {
                var answer = await publisherGateway.PublishAsync(topic, $"{{\"round\":{round}}}");
                Assert.Equal(round, answer.Seq);
            }
        }

        var received = await subscriber.MessagesAsync(topics.Length * 3, TimeSpan.FromSeconds(30));
        foreach (var topic in topics)
        {
            Assert.Equal([1L, 2L, 3L], received.Where(m => m.Topic == topic).Select(m => m.Seq));
        }
    }
}

using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;
using System.Net;
using System.Text;

namespace OrleansPush.Gateway.Tests;

/// <summary>A real silo process killed with SIGKILL while publishing, on the Redis store.</summary>
public sealed class SiloKillTests(ITestOutputHelper output)
{
    [Fact]
    public async Task SubscribersReceiveEveryAcknowledgedMessageInOrderAcrossASiloKill()
    {
        var prefix = "kill" + Guid.NewGuid().ToString("N")[..8];
        var settings = new Dictionary<string, string?>
        {
            ["OrleansPush:Storage:Provider"] = "Redis",
            ["OrleansPush:Storage:Redis"] = Environment.GetEnvironmentVariable("ORLEANSPUSH_TEST_REDIS")
                ?? throw new InvalidOperationException("ORLEANSPUSH_TEST_REDIS is not set: run the tests with ./test.sh."),
            ["OrleansPush:Storage:Prefix"] = prefix,
            ["OrleansPush:Cluster:ServiceId"] = prefix,
            ["OrleansPush:Cluster:ClusterId"] = prefix,
            ["OrleansPush:Cluster:Membership:ProbeTimeout"] = "00:00:01",
            ["OrleansPush:Cluster:Membership:NumMissedProbesLimit"] = "2",
            ["OrleansPush:Routing:Lease"] = "00:00:03",
        };
        await using var primary = SiloProcess.Start(null, settings);
        await using var secondary = SiloProcess.Start(primary.SiloPort, settings);
        var gatewaySettings = TestGateway.Merge(settings, new Dictionary<string, string?>
        {
            ["OrleansPush:Cluster:Mode"] = "Localhost",
            ["OrleansPush:Cluster:GatewayPorts:0"] = primary.GatewayPort.ToString(),
            ["OrleansPush:Cluster:GatewayPorts:1"] = secondary.GatewayPort.ToString(),
        });
        await using var gateway = await StartGatewayWhenClusterIsUpAsync(gatewaySettings);

        var topics = Enumerable.Range(0, 16).Select(i => $"kill-{i}-{Guid.NewGuid():N}").ToArray();
        await using var subscriber = await WsClient.ConnectAsync(gateway.WebSocketUri());
        foreach (var topic in topics)
        {
            Assert.Equal("ok", (await subscriber.SubscribeAsync(topic)).Op);
        }

        var acknowledged = topics.ToDictionary(t => t, _ => new List<long>());
        var failedAttempts = 0;
        async Task PublishRoundsAsync(int from, int to)
        {
            for (var round = from; round < to; round++)
            {
                foreach (var topic in topics)
                {
                    var key = $"{topic}-{round}";
                    var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(45);
                    while (true)
                    {
                        using var request = new HttpRequestMessage(HttpMethod.Post, "/api/topics/" + topic)
                        {
                            Content = new StringContent($"{{\"round\":{round}}}", Encoding.UTF8, "application/json"),
                        };
                        request.Headers.Add("Idempotency-Key", key);
                        using var response = await gateway.Http.SendAsync(request);
                        if (response.IsSuccessStatusCode)
                        {
                            var answer = await System.Net.Http.Json.HttpContentJsonExtensions.ReadFromJsonAsync<PublishAnswer>(response.Content);
                            acknowledged[topic].Add(answer!.Seq);
                            break;
                        }

                        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
                        Assert.True(DateTime.UtcNow < deadline, "publishing did not resume within 45 s");
                        failedAttempts++;
                        await Task.Delay(200);
                    }
                }
            }
        }

        await PublishRoundsAsync(0, 5);
        secondary.Kill();
        var killedAt = DateTime.UtcNow;
        await PublishRoundsAsync(5, 6);
        var firstRoundAfterKill = DateTime.UtcNow - killedAt;
        await PublishRoundsAsync(6, 15);

        // Every topic's stream, as the subscriber sees it: strictly increasing, no gap, nothing acknowledged missing.
        var received = topics.ToDictionary(t => t, _ => new List<long>());
        var expectedHead = topics.ToDictionary(t => t, t => acknowledged[t].Max());
        var wait = DateTime.UtcNow + TimeSpan.FromSeconds(40);
        while (topics.Any(t => received[t].LastOrDefault() < expectedHead[t]) && DateTime.UtcNow < wait)
        {
            try
            {
                foreach (var m in await subscriber.MessagesAsync(1, TimeSpan.FromSeconds(2)))
                {
                    received[m.Topic!].Add(m.Seq);
                }
            }
            catch (OperationCanceledException)
            {
            }
        }

        var lost = topics.Sum(t => acknowledged[t].Count(seq => !received[t].Contains(seq)));
        output.WriteLine($"silo killed: first round after the kill took {firstRoundAfterKill.TotalSeconds:F1} s, {failedAttempts} publish attempts answered 503 and were retried; acknowledged messages lost: {lost}");
        foreach (var topic in topics)
        {
            var seqs = received[topic];
            Assert.True(seqs.Count > 0 && seqs[^1] >= expectedHead[topic], $"{topic}: received up to {seqs.LastOrDefault()} of {expectedHead[topic]}");
            Assert.Equal(Enumerable.Range(1, seqs.Count).Select(i => (long)i), seqs);
            Assert.All(acknowledged[topic], seq => Assert.Contains(seq, seqs));
        }
    }

    /// <summary>The silos need a moment to form a cluster; the gateway's client retries until they answer.</summary>
    /// <summary>Two or more silo processes on Redis membership that notice a killed silo within a few seconds (the
    /// probe settings the cluster fault tests use), under their own service and cluster id.</summary>
    internal static Dictionary<string, string?> FastFailoverCluster(string id) => new()
    {
        ["OrleansPush:Cluster:ServiceId"] = id,
        ["OrleansPush:Cluster:ClusterId"] = id,
        ["OrleansPush:Cluster:Clustering"] = "Redis",
        ["OrleansPush:Cluster:Redis"] = Redis(),
        ["OrleansPush:Cluster:AdvertisedIP"] = "127.0.0.1",
        ["OrleansPush:Cluster:Membership:ProbeTimeout"] = "00:00:01",
        ["OrleansPush:Cluster:Membership:NumMissedProbesLimit"] = "2",
        ["OrleansPush:Cluster:Membership:MaxProbeTimeout"] = "00:00:02",
        ["OrleansPush:Cluster:Membership:ExtendProbeTimeoutDuringDegradation"] = "false",
    };

    internal static string Redis() => Environment.GetEnvironmentVariable("ORLEANSPUSH_TEST_REDIS")
        ?? throw new InvalidOperationException("ORLEANSPUSH_TEST_REDIS is not set: run the tests with ./test.sh.");

    /// <summary>Waits until every silo is an active member: a silo still joining hosts nothing, and would not take over
    /// when another dies.</summary>
    internal static async Task WaitForActiveSilosAsync(TestGateway gateway, params SiloProcess[] silos)
    {
        var management = gateway.Services.GetRequiredService<IClusterClient>().GetGrain<IManagementGrain>(0);
        var joined = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while ((await management.GetHosts(onlyActive: true)).Count < silos.Length)
        {
            Assert.True(DateTime.UtcNow < joined, $"the {silos.Length} silos did not form a cluster within 60 s:\n"
                + string.Join("\n", silos.Select(s => s.Tail())));
            await Task.Delay(500);
        }
    }

    internal static async Task<TestGateway> StartGatewayWhenClusterIsUpAsync(Dictionary<string, string?> settings)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            try
            {
                return await TestGateway.StartCustomAsync(settings);
            }
            catch (Exception) when (DateTime.UtcNow < deadline)
            {
                await Task.Delay(1000);
            }
        }
    }
}

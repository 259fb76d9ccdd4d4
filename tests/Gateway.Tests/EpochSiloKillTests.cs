using System.Net;
using System.Net.Http.Json;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;

namespace OrleansPush.Gateway.Tests;

/// <summary>Defect 2 of issue 10 as it was seen: two silo processes on the in-memory store with Redis membership, one
/// killed with SIGKILL; the topics that lived on it start a new epoch on the other, and a subscriber must get that epoch
/// from its seq 1. The silo killed is the one that hosts the most of the topics (placement decides where they go).</summary>
public sealed class EpochSiloKillTests(ITestOutputHelper output)
{
    private const int Topics = 20;

    [Fact]
    public async Task TopicsOfADeadSiloAreDeliveredFromTheFirstMessageOfTheirNewEpoch()
    {
        var id = "ep" + Guid.NewGuid().ToString("N")[..8];
        var settings = TestGateway.Merge(SiloKillTests.FastFailoverCluster(id), new Dictionary<string, string?>
        {
            ["OrleansPush:Gateway:PublishAttemptTimeout"] = "00:00:02",
            ["OrleansPush:Routing:Lease"] = "00:00:30", // renewed every 10 s
            ["Logging:LogLevel:Orleans.Runtime.MembershipService"] = "Information",
        });
        await using var first = SiloProcess.Start(null, settings);
        await using var second = SiloProcess.Start(null, settings);
        await using var gateway = await SiloKillTests.StartGatewayWhenClusterIsUpAsync(TestGateway.Merge(settings, new Dictionary<string, string?>
        {
            ["OrleansPush:Cluster:Mode"] = "Cluster",
        }));

        // Both silos must be active members before topics are placed: a silo still joining hosts nothing, and would
        // not take over when the other dies.
        var management = gateway.Services.GetRequiredService<IClusterClient>().GetGrain<IManagementGrain>(0);
        await SiloKillTests.WaitForActiveSilosAsync(gateway, first, second);

        var topics = Enumerable.Range(0, Topics).Select(i => $"epk-{i}-{Guid.NewGuid():N}").ToArray();
        await using var subscriber = await WsClient.ConnectAsync(gateway.WebSocketUri());
        foreach (var topic in topics)
        {
            Assert.Equal("ok", (await subscriber.SubscribeAsync(topic)).Op);
        }

        var acknowledged = topics.ToDictionary(t => t, _ => new List<PublishAnswer>());
        foreach (var topic in topics)
        {
            acknowledged[topic].Add(await PublishAsync(gateway, topic, "before", TimeSpan.FromSeconds(10)));
        }

        // The subscriber has seq 1 of each topic's first epoch before the kill (a stream event still on its way when a
        // silo dies may die with it, and with its history: the epoch change then tells the client).
        var received = topics.ToDictionary(t => t, _ => new List<(string Epoch, long Seq)>());
        foreach (var m in await subscriber.MessagesAsync(Topics))
        {
            received[m.Topic!].Add((m.Epoch!, m.Seq));
        }

        // Kill the silo that hosts the most topics (their history, in its memory, dies with it).
        var hosts = new List<int>();
        foreach (var topic in topics)
        {
            var address = await management.GetActivationAddress(gateway.Services.GetRequiredService<IClusterClient>().GetGrain<ITopicGrain>(topic));
            hosts.Add(address?.Endpoint.Port ?? 0);
        }

        var victim = hosts.Count(p => p == second.SiloPort) >= hosts.Count(p => p == first.SiloPort) ? second : first;
        output.WriteLine($"topics per silo port: {string.Join(", ", hosts.GroupBy(p => p).Select(g => $"{g.Key}: {g.Count()}"))}; killing {victim.SiloPort}");
        victim.Kill();
        var survivor = victim == first ? second : first;
        try
        {
            for (var n = 1; n <= 3; n++)
            {
                foreach (var topic in topics)
                {
                    acknowledged[topic].Add(await PublishAsync(gateway, topic, $"after-{n}", TimeSpan.FromSeconds(45)));
                }
            }
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            throw new InvalidOperationException(ex.Message + "\n--- surviving silo (last lines) ---\n" + survivor.Tail(), ex);
        }

        await Task.Delay(TimeSpan.FromSeconds(25));
        foreach (var topic in topics)
        {
            acknowledged[topic].Add(await PublishAsync(gateway, topic, "later", TimeSpan.FromSeconds(10)));
        }

        var last = topics.ToDictionary(t => t, t => acknowledged[t][^1]);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (topics.Any(t => !received[t].Contains((last[t].Epoch, last[t].Seq))) && DateTime.UtcNow < deadline)
        {
            try
            {
                foreach (var m in await subscriber.MessagesAsync(1, TimeSpan.FromSeconds(1)))
                {
                    received[m.Topic!].Add((m.Epoch!, m.Seq));
                }
            }
            catch (OperationCanceledException)
            {
            }
        }

        var moved = topics.Where(t => acknowledged[t].Select(a => a.Epoch).Distinct().Count() > 1).ToList();
        var missing = topics.Sum(t => acknowledged[t].Count(a => !received[t].Contains((a.Epoch, a.Seq))));
        output.WriteLine($"{moved.Count} of {Topics} topics started a new epoch; acknowledged messages never delivered: {missing}");
        Assert.NotEmpty(moved);
        foreach (var topic in topics)
        {
            var expected = acknowledged[topic].Select(a => (a.Epoch, a.Seq)).ToList();
            Assert.True(expected.SequenceEqual(received[topic]),
                $"{topic}: acknowledged {string.Join(",", expected)} but received {string.Join(",", received[topic])}");
        }
    }

    /// <summary>Publishes with an idempotency key, retried until acknowledged (a dead silo's grains take a moment to
    /// move).</summary>
    private static async Task<PublishAnswer> PublishAsync(TestGateway gateway, string topic, string data, TimeSpan within)
    {
        var key = Guid.NewGuid().ToString("N");
        var deadline = DateTime.UtcNow + within;
        while (true)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/api/topics/" + topic)
            {
                Content = new StringContent($"\"{data}\"", Encoding.UTF8, "application/json"),
            };
            request.Headers.Add("Idempotency-Key", key);
            using var response = await gateway.Http.SendAsync(request);
            if (response.IsSuccessStatusCode)
            {
                return (await response.Content.ReadFromJsonAsync<PublishAnswer>())!;
            }

            Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
            Assert.True(DateTime.UtcNow < deadline, $"publishing to {topic} was not acknowledged within {within}");
            await Task.Delay(200);
        }
    }
}

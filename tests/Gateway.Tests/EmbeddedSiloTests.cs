namespace OrleansPush.Gateway.Tests;

/// <summary>Issue 16: the embedded node (one silo) keeps its grains on Orleans' local directory, which leaves less behind
/// after a burst of grains than the distributed one; the setting still turns the distributed one on.</summary>
public sealed class EmbeddedSiloTests
{
    private const string DistributedDirectory = "Orleans.Runtime.GrainDirectory.DistributedGrainDirectory";

    [Fact]
    public async Task TheEmbeddedSiloUsesTheLocalDirectoryUnlessTheStrongOneIsAskedFor()
    {
        var directory = typeof(CoreHostingExtensions).Assembly.GetType(DistributedDirectory, throwOnError: true)!;
        await using (var plain = await TestGateway.StartEmbeddedAsync())
        {
            Assert.Null(plain.SiloServices!.GetService(directory));
            var topic = GatewayFixture.NewTopic("dir");
            Assert.Equal(1, (await plain.PublishAsync(topic, "{\"n\":1}")).Seq);
        }

        await using var strong = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?> { ["OrleansPush:Cluster:StrongGrainDirectory"] = "true" });
        Assert.NotNull(strong.SiloServices!.GetService(directory));
    }
}
